"""Fault injection: does the coordinate-check verdict pass every correct scheme and fail every broken one?

For each model kind, optimizer, learning rate and step count, runs the width check (widths 64..512, base 64,
3 seeds) under the correct mu-P scheme and under each fault of hptransfer.verify.faults (one rule removed or doubled);
and the depth check (depths 2..16, base 2) under CompleteP / Depth-muP and their faults. Prints a table of
false alarms (a correct scheme that FAILs), misses (a fault that PASSes) and inconclusive verdicts, and writes
every verdict to bench/results/coord_faults-<device>.json.

    python bench/coord_faults.py --optimizers adamw sgd   # the grid of BENCHMARKS.md (about 45 min on 2 cores;
                                                          # adam equals adamw here: the check uses no decay)
    python bench/coord_faults.py --smoke         # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Any, Callable

import torch

import hptransfer as hpt
from hptransfer.verify.coord import CoordCheckError
from hptransfer.data.synthetic import gaussian_mixture
from hptransfer.data.text import text_batch
from hptransfer.verify.faults import DEPTH_FAULTS, MUP, WIDTH_FAULTS
from hptransfer.models import GPT, PlainGPT, PlainResMLP

from common import RESULTS, write_result

LRS = {"adam": [1e-3, 3e-3, 1e-2, 3e-2], "adamw": [1e-3, 3e-3, 1e-2, 3e-2], "sgd": [0.03, 0.1, 0.3, 1.0]}
EXTRA_STEPS = {"adam": 1e-2, "adamw": 1e-2, "sgd": 0.3}  # the LR at which steps 3 and 10 are also run
VOCAB = text_batch(1, 8)[2]


def text_batches(batch: int = 2, seq: int = 16):
    step = 0
    while True:
        inputs, targets, _ = text_batch(batch, seq, seed=step)
        yield inputs, targets
        step += 1


def llama(width: int, depth: int = 2) -> torch.nn.Module:
    from hptransfer.models.registry import _hf_llama

    return _hf_llama(width, depth, {"vocab_size": VOCAB, "block_size": 32})


MODELS: dict[str, dict[str, Any]] = {
    "gpt": dict(build=lambda w, d=2: GPT(d_model=w, n_layer=d, n_head=4, vocab_size=VOCAB, block_size=32),
                data=text_batches, options={}),
    "plain_gpt": dict(build=lambda w, d=2: PlainGPT(d_model=w, n_layer=d, n_head=4, vocab_size=VOCAB, block_size=32,
                                                    fused_qkv=False),
                      data=text_batches, options={"branches": ["blocks.*.attn", "blocks.*.mlp"]}),
    "resmlp": dict(build=lambda w, d=2: PlainResMLP(w, d), options={"branches": ["blocks.*.branch"]},
                   data=lambda: gaussian_mixture(32, 32, 10, seed=0)),  # one batch, every step
    "hf_llama": dict(build=llama, data=text_batches, options={}),
}


def verdict(build: Callable[[int], torch.nn.Module], sizes: list[int], axis: str, data: Any, optimizer: str,
            lr: float, steps: int, seeds: int) -> tuple[str, str]:
    try:
        result = hpt.coord_check(build, sizes, axis=axis, data=data, optimizer=optimizer, lr=lr, steps=steps,
                                 seeds=seeds)
    except CoordCheckError as err:  # a loss that went non-finite: the LR is far past the stable range
        return "INCONCLUSIVE", f"error: {str(err)[:120]}"
    detail = result.reason if result.verdict == "INCONCLUSIVE" else "; ".join(result.likely_causes()[:1])
    return result.verdict, detail


def parametrized(model: str, scheme: Any, width: int | None, depth: int | None, base: tuple[int, int]):
    spec = MODELS[model]

    def build(size: int) -> torch.nn.Module:
        w, d = (size, depth) if width is None else (width, size)
        net = spec["build"](w, d)
        with torch.device("meta"):
            base_net = spec["build"](*base)
        # check=False: the faults are meant to reach the coordinate check (the safety net would refuse most of them)
        hpt.parametrize(net, base_net, scheme, check=False, **spec["options"])
        return net

    return build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--optimizers", nargs="+", default=["adam", "adamw", "sgd"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tag", default="", help="appended to the result name")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    widths, depths = [64, 128, 256, 512], [2, 4, 8, 16]
    if args.smoke:
        args.models, args.optimizers, args.seeds, widths, depths = ["gpt"], ["adamw"], 1, [32, 64, 128, 256], [1, 2, 4, 8]
    cases = []
    started = time.perf_counter()
    for model, optimizer in itertools.product(args.models, args.optimizers):
        family = "sgd" if optimizer == "sgd" else "adam"
        grid = [(lr, 5) for lr in LRS[optimizer]] + [(EXTRA_STEPS[optimizer], s) for s in (3, 10)]
        if args.smoke:
            grid = [(1e-2, 2)]
        schemes = {"correct mup": (MUP, None), **{name: fault for name, fault in WIDTH_FAULTS[family].items()}}
        if model == "resmlp":  # no attention in it
            schemes.pop("attention 1/sqrt(d)", None)
        for (lr, steps), (name, (scheme, expected)) in itertools.product(grid, schemes.items()):
            build = parametrized(model, scheme, None, 2, (widths[0], 2))
            got, detail = verdict(build, widths, "width", MODELS[model]["data"](), optimizer, lr, steps, args.seeds)
            cases.append(dict(model=model, optimizer=optimizer, axis="width", lr=lr, steps=steps, scheme=name,
                              fault=expected is not None, verdict=got, detail=detail,
                              named=expected is None or got != "FAIL" or expected in detail))
            print(f"{model:9s} {optimizer:5s} width lr={lr:<6g} steps={steps:<2d} {name:28s} {got}", flush=True)
        if family == "adam" and model in ("gpt", "resmlp") and not args.smoke:
            correct, fault = ("completep", "no branch multiplier") if model == "gpt" else \
                ("depth_mup", "no in-block depth LR factor")
            for name, scheme in ((f"correct {correct}", correct), (fault, DEPTH_FAULTS[fault][1])):
                build = parametrized(model, scheme, 64, None, (64, depths[0]))
                got, detail = verdict(build, depths, "depth", MODELS[model]["data"](), optimizer, 1e-3, 5, args.seeds)
                cases.append(dict(model=model, optimizer=optimizer, axis="depth", lr=1e-3, steps=5, scheme=name,
                                  fault=not name.startswith("correct"), verdict=got, detail=detail, named=True))
                print(f"{model:9s} {optimizer:5s} depth lr=0.001  steps=5  {name:28s} {got}", flush=True)
    seconds = time.perf_counter() - started
    table = summarize(cases)
    print(table)
    device = torch.device("cpu")
    name = "coord_faults" + ("-smoke" if args.smoke else "") + (f"-{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = write_result(name, device, {"widths": widths, "depths": depths, "seeds": args.seeds, "lrs": LRS,
                                       "seconds": seconds, "cases": cases, "table": table})
    print(f"wrote {path} ({seconds / 60:.1f} min)")


def summarize(cases: list[dict[str, Any]]) -> str:
    """Per model and optimizer: correct cases, false alarms, faults, misses, inconclusive; then the exceptions."""
    lines = ["| model | optimizer | correct runs | false alarms | fault runs | misses | inconclusive | cause not named |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(c["model"], c["optimizer"]) for c in cases}, key=lambda k: (list(MODELS).index(k[0]), k[1]))
    for model, optimizer in keys:
        rows = [c for c in cases if (c["model"], c["optimizer"]) == (model, optimizer)]
        correct = [c for c in rows if not c["fault"]]
        faults = [c for c in rows if c["fault"]]
        lines.append(f"| {model} | {optimizer} | {len(correct)} | {sum(c['verdict'] == 'FAIL' for c in correct)} | "
                     f"{len(faults)} | {sum(c['verdict'] == 'PASS' for c in faults)} | "
                     f"{sum(c['verdict'] == 'INCONCLUSIVE' for c in rows)} | "
                     f"{sum(not c['named'] for c in faults)} |")
    odd = [c for c in cases if (c["verdict"] == "FAIL") != c["fault"] or not c["named"]
           or c["verdict"] == "INCONCLUSIVE"]
    if odd:
        lines += ["", "Exceptions (false alarm, miss, inconclusive, or a FAIL whose first cause names another rule):"]
        lines += [f"- {c['model']} {c['optimizer']} {c['axis']} lr {c['lr']:g} steps {c['steps']} {c['scheme']}: "
                  f"{c['verdict']} ({c['detail'][:160]})" for c in odd]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
