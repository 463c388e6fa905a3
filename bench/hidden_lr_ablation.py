"""Split a width-transfer loss gap between the hidden matrices' LR and everything else.

At one width, trains each scheme with the LR of its hidden matrices (role "hidden" in the plan) multiplied by a
factor, at a log2 LR, both given per run in ``--runs``. Crossing the two schemes' hidden LRs separates what the
hidden-LR rule costs from what the forward and init differences (readout, attention scale, bias init) cost:

    # mu-P's hidden LR at width 512 from a 64-wide base is SP's / sqrt(8) under Adafactor (BENCHMARKS.md 8);
    # the two commands ran side by side at one thread each
    python bench/hidden_lr_ablation.py --optimizer adafactor --no-zero-init --width 512 --base-width 64 \
        --grad-clip 0 --runs mup:1:-4.0 mup:2.8284271:-4.0 mup:2.8284271:-4.5 mup:2.8284271:-5.0 \
        --tag adafactor-512-mup
    python bench/hidden_lr_ablation.py --optimizer adafactor --no-zero-init --width 512 --base-width 64 \
        --grad-clip 0 --runs sp:0.35355339:-4.0 sp:0.35355339:-4.5 sp:0.35355339:-3.5 sp:0.35355339:-3.0 \
        --tag adafactor-512-sp
    python bench/hidden_lr_ablation.py --smoke           # seconds; used by the tests

Each run is ``scheme:hidden_mult:log2_lr``, trained for every seed; the result lists each loss per seed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace
from typing import Any

import torch

import hptransfer as hpt
import hptransfer.optim.groups
from hptransfer.data import load_data
from hptransfer.models import ModelSpec
from hptransfer.pipeline.train import HParams, TrainSettings, train

from common import transfer_optim_settings, write_result


def scaled_hidden_groups(hidden_mult: float):
    """A stand-in for hptransfer.optim.groups.param_groups that moves the hidden matrices into their own groups with
    their LR (and lr_scale, so schedulers keep the ratio) multiplied by ``hidden_mult``."""
    original = hptransfer.optim.groups.param_groups

    def groups(model: torch.nn.Module, lr: float, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        plan = hpt.get_plan(model)
        role = {id(p): plan.params[name].role for name, p in model.named_parameters() if name in plan.params}
        out = []
        for group in original(model, lr, *args, **kwargs):
            hidden = [p for p in group["params"] if role.get(id(p)) == "hidden"]
            rest = [p for p in group["params"] if role.get(id(p)) != "hidden"]
            if rest:
                out.append({**group, "params": rest})
            if hidden:
                out.append({**group, "params": hidden, "lr": group["lr"] * hidden_mult,
                            "lr_scale": group.get("lr_scale", 1.0) * hidden_mult,
                            "hpt_group": group.get("hpt_group", "") + f" (hidden x {hidden_mult:g})"})
        return out

    return groups


def parse_run(text: str) -> tuple[str, float, float]:
    try:
        scheme, mult, log2_lr = text.split(":")
        return scheme, float(mult), float(log2_lr)
    except ValueError as err:
        raise SystemExit(f"--runs {text!r}: write scheme:hidden_mult:log2_lr, e.g. mup:2.83:-4.0") from err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["mup:1:-4.0", "sp:1:-4.0"])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--base-width", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--grad-clip", type=float, default=TrainSettings.grad_clip)
    parser.add_argument("--no-zero-init", action="store_true",
                        help="keep the GPT's readout and query at their normal init (zero init is the default)")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--tag", default="")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.width, args.base_width, args.seeds, args.steps, args.batch, args.seq = 64, 32, 1, 4, 4, 16
        args.runs = ["mup:1:-6", "mup:4:-6"]
    runs = [parse_run(text) for text in args.runs]
    data = load_data(SimpleNamespace(kind="text", path=None, val_fraction=0.1))
    options = {"vocab_size": data.vocab_size, "n_head": 4, "block_size": args.seq}
    if not args.no_zero_init:
        options.update(zero_init_readout=True, zero_init_query=True)
    spec = ModelSpec("gpt", args.width, 2, args.base_width, 2, options)
    settings = TrainSettings(steps=args.steps, batch_size=args.batch, seq_len=args.seq, eval_every=0,
                             eval_batches=1 if args.smoke else 8, grad_clip=args.grad_clip)
    optim = transfer_optim_settings(args.optimizer)
    started = time.perf_counter()
    rows = []
    original = hptransfer.optim.groups.param_groups
    for scheme, mult, log2_lr in runs:
        losses = []
        hptransfer.optim.groups.param_groups = scaled_hidden_groups(mult)
        try:
            for seed in range(args.seeds):
                result = train(spec, scheme, data, HParams(lr=2.0 ** log2_lr),
                               TrainSettings(**{**settings.__dict__, "seed": seed}), optim, width=args.width)
                losses.append(result.val_loss)
        finally:
            hptransfer.optim.groups.param_groups = original
        rows.append({"scheme": scheme, "hidden_mult": mult, "log2_lr": log2_lr, "per_seed": losses,
                     "mean": statistics.fmean(losses)})
        print(f"{scheme} hidden x {mult:g} at log2 lr {log2_lr}: {rows[-1]['mean']:.4f} {losses}", flush=True)
    name = "hidden_lr_ablation" + ("-smoke" if args.smoke else "") + (f"-{args.tag}" if args.tag else "")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where train() ran
    path = write_result(name, device, {
        "optimizer": args.optimizer, "width": args.width, "base_width": args.base_width, "seeds": args.seeds,
        "steps": args.steps, "batch": args.batch, "seq": args.seq, "grad_clip": args.grad_clip,
        "zero_init": not args.no_zero_init, "rows": rows, "seconds": time.perf_counter() - started})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
