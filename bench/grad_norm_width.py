"""The global gradient norm against width, under mu-P and SP: does a fixed clip threshold bind alike at every width?

Trains the reference GPT (2 layers, zero-init readout and query) at widths 32..256 for 60 steps (16 x 64 tokens,
AdamW, mu-P at 2^-6, SP at 2^-6 x 32 / width, clip off) and records the global gradient norm before each step.
Reports the norm at steps 1, 10, 30, 60 per width and its width exponent (a least-squares slope in log-log).

    python bench/grad_norm_width.py           # about 1 minute on 2 cores
    python bench/grad_norm_width.py --smoke   # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch

from hptransfer.data import load_data
from hptransfer.models import ModelSpec
from hptransfer.pipeline.train import HParams, TrainSettings, train

from common import write_result

STEPS_SHOWN = (1, 10, 30, 60)


def norms_during(spec: ModelSpec, scheme: str, data, lr: float, settings: TrainSettings, width: int) -> list[float]:
    """The global gradient norm before every optimizer step (clip off: measured through a threshold of inf)."""
    seen: list[float] = []
    original = torch.nn.utils.clip_grad_norm_

    def record(parameters, max_norm, *args, **kwargs):
        norm = original(parameters, float("inf"), *args, **kwargs)
        seen.append(float(norm))
        return norm

    torch.nn.utils.clip_grad_norm_ = record
    try:
        train(spec, scheme, data, HParams(lr=lr, grad_clip=float("inf")), settings, width=width)
    finally:
        torch.nn.utils.clip_grad_norm_ = original
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.widths, args.steps = [16, 32], 10
    data = load_data(SimpleNamespace(kind="text", path=None, val_fraction=0.1))
    base = min(args.widths)
    spec = ModelSpec("gpt", max(args.widths), 2, base, 2, {**data.model_options, "n_head": 4, "block_size": 64,
                                                            "zero_init_readout": True, "zero_init_query": True})
    settings = TrainSettings(steps=args.steps, batch_size=16, seq_len=64, eval_every=0, eval_batches=1)
    shown = [s for s in STEPS_SHOWN if s <= args.steps]
    rows = {}
    for scheme in ("mup", "sp"):
        per_width = {}
        for width in args.widths:
            lr = 2.0**-6 * (1.0 if scheme == "mup" else base / width)
            per_width[width] = norms_during(spec, scheme, data, lr, replace(settings, seed=0), width)
        logs = np.log2(np.array(args.widths, dtype=float))
        exponents = {s: float(np.polyfit(logs, np.log2([per_width[w][s - 1] for w in args.widths]), 1)[0])
                     for s in shown}
        rows[scheme] = {"norms": {str(w): [per_width[w][s - 1] for s in shown] for w in args.widths},
                        "width_exponent": {str(s): e for s, e in exponents.items()},
                        "median_exponent": float(np.median(list(exponents.values())))}
        for width in args.widths:
            print(f"{scheme} width {width}: norm at steps {shown}: "
                  + ", ".join(f"{per_width[width][s - 1]:.3f}" for s in shown))
        print(f"{scheme}: width exponent of the norm at those steps: "
              + ", ".join(f"{e:+.2f}" for e in exponents.values()))
    payload = {"widths": args.widths, "steps": args.steps, "steps_shown": shown, "schemes": rows,
               "setting": "reference GPT, 2 layers, 4 heads, zero-init readout and query, 16 x 64 tokens, AdamW "
                          "(0.9, 0.95), cosine, clip off; mu-P LR 2^-6, SP 2^-6 x base / width"}
    path = write_result("grad_norm_width" + ("-smoke" if args.smoke else ""), torch.device("cpu"), payload)
    print(f"wrote {path}")
    assert all(math.isfinite(v) for r in rows.values() for n in r["norms"].values() for v in n)


if __name__ == "__main__":
    main()
