"""Depth transfer: LR sweeps for mup, depth_mup and completep across depths, on the residual MLP (one layer
per block) and on the reference GPT, both on the built-in text.

The residual MLP predicts the next character from the 4 before it (each character a fixed random 16-dim
code, so the input has 64 dims): real data with enough structure that the loss keeps falling over the run,
which makes the LR basin sharp enough to locate. Each sweep is a half-octave grid grown from a guess until
the basin is bracketed (bench/sweeps.py:basin_sweep).

Reports per model and scheme the interpolated optimal log2 LR per depth, its spread in octaves (target:
depth_mup and completep <= 0.5 over >= 8x depth) and whether deeper was better at the shared LR.

    python bench/depth_transfer.py                 # CPU small settings (about 22 min on 2 cores)
    python bench/depth_transfer.py --models gpt --depths 2 4 8 16 32 --width 256 --steps 2000   # e.g. a GPU
    python bench/depth_transfer.py --smoke         # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from hptransfer.data import load_data
from hptransfer.data.datasets import Classification
from hptransfer.data.text import CharTokenizer, builtin_text
from hptransfer.models import ModelSpec
from hptransfer.pipeline.train import HParams, TrainSettings, train

from common import RESULTS, device_name, write_result
from sweeps import add_sweep_arguments, sweep_settings, sweep_sizes
from width_transfer import plot


def char_ngrams(context: int = 4, code_dim: int = 16, val_fraction: float = 0.1, seed: int = 0) -> Classification:
    """Next-character classification from the ``context`` characters before it, on the built-in text."""
    tokenizer = CharTokenizer(builtin_text())
    ids = tokenizer.encode(builtin_text())
    codes = torch.randn(tokenizer.vocab_size, code_dim, generator=torch.Generator().manual_seed(seed))
    windows = ids.unfold(0, context + 1, 1)
    points, labels = codes[windows[:, :context]].flatten(1), windows[:, context].long()
    cut = int(len(labels) * (1 - val_fraction))
    return Classification((points[:cut], labels[:cut]), (points[cut:], labels[cut:]), tokenizer.vocab_size)


@dataclass
class DepthSetup:
    """One model's depth ladder and how to train it."""

    family: str
    width: int
    depths: list[int]
    steps: int
    batch_size: int
    seq_len: int
    eval_batches: int
    options: dict[str, Any] = field(default_factory=dict)


SETUPS = {
    "resmlp": DepthSetup("resmlp", 128, [2, 4, 8, 16], 1000, 64, 1, 100),
    "gpt": DepthSetup("gpt", 64, [1, 2, 4, 8], 200, 16, 64, 8,
                      {"n_head": 4, "zero_init_readout": True, "zero_init_query": True}),
}


def load(model: str) -> Any:
    return char_ngrams() if model == "resmlp" else load_data(SimpleNamespace(kind="text", path=None, val_fraction=0.1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--schemes", nargs="+", default=["mup", "depth_mup", "completep"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--depths", type=int, nargs="+", help="override every model's depth ladder")
    parser.add_argument("--width", type=int, help="override every model's width")
    parser.add_argument("--steps", type=int, help="override every model's steps")
    parser.add_argument("--grad-clip", type=float, default=TrainSettings.grad_clip,
                        help="global gradient-norm clip threshold (0: off); the same for every scheme and depth")
    add_sweep_arguments(parser, start=-7.0)
    parser.add_argument("--tag", default="", help="appended to the result names (to split a run across calls)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = "depth_transfer" + ("-smoke" if args.smoke else "") + (f"-{args.tag}" if args.tag else "")
    payload = {"seeds": args.seeds, "grad_clip": args.grad_clip, "sweep": sweep_settings(args), "models": {}}
    started = time.perf_counter()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        setup = SETUPS[model]
        overrides = {"depths": args.depths, "width": args.width, "steps": args.steps}
        setup = DepthSetup(**{**setup.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
        if args.smoke:
            setup = DepthSetup(**{**setup.__dict__, "depths": setup.depths[:3], "steps": 5, "batch_size": 4,
                                  "seq_len": min(setup.seq_len, 16), "eval_batches": 1})
            args.seeds, args.bounds = 1, [-7.5, -7.0]
        data = load(model)
        options = {**data.model_options, **setup.options}
        if setup.family == "gpt":
            options["block_size"] = setup.seq_len
        spec = ModelSpec(setup.family, setup.width, max(setup.depths), setup.width, min(setup.depths), options)
        settings = TrainSettings(steps=setup.steps, batch_size=setup.batch_size, seq_len=setup.seq_len,
                                 eval_every=0, eval_batches=setup.eval_batches, grad_clip=args.grad_clip)
        model_started = time.perf_counter()
        results = {}
        for scheme in args.schemes:
            def run(log2_lr: float, seed: int, depth: int) -> float:
                return train(spec, scheme, data, HParams(lr=2.0 ** log2_lr),
                             TrainSettings(**{**settings.__dict__, "seed": seed}), depth=depth).val_loss
            results[scheme] = sweep_sizes(run, setup.depths, args, label=f"{model} {scheme} depth")
            print(f"{model} {scheme}: spread {results[scheme]['spread_octaves']:.2f} octaves; deeper better at "
                  f"log2 lr {results[scheme]['shared_log2_lr']}: {results[scheme]['larger_better_at_shared']}",
                  flush=True)
        payload["models"][model] = {"setup": setup.__dict__, "seconds": time.perf_counter() - model_started,
                                    "results": results}
        plot(results, RESULTS / f"{name}-{model}-{device_name(device)}.png", "depth")
    payload["seconds"] = time.perf_counter() - started
    print(f"wrote {write_result(name, device, payload)}")


if __name__ == "__main__":
    main()
