"""Width transfer on a standard ResNet (torchvision's layout: BasicBlocks with BatchNorm, downsampling first blocks)
on scikit-learn's digits, mu-P and SP side by side; and the depth coordinate check on the same ResNet.

Widths are the first stage's channels (the stages have w, 2w, 4w). Each scheme gets half-octave LR basin sweeps per
width (bench/sweeps.py), Adam, the mean final validation loss over seeds; the spread of the interpolated optima is
the transfer's measure (targets: mu-P <= 0.5 octave, SP >= 2 octaves over >= 8x); it is also reported with the
vertex of a parabola fitted to each sweep's five lowest points (``basin_fit``), steadier in flat basins. Runs are short (60 steps of 32
images): longer ones solve digits at every width and leave flat, noisy basins.

    python bench/resnet_transfer.py                  # widths 8..128, 6 seeds, 60 steps (about 15 min on 2 cores)
    python bench/resnet_transfer.py --depth-check    # the depth check only: 1..8 blocks per stage (a minute)
    python bench/resnet_transfer.py --smoke          # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import math
import time
from types import SimpleNamespace

import numpy as np
import torch

import hptransfer as hpt
from hptransfer.data import load_data
from hptransfer.models import BasicBlock, ModelSpec, StandardResNet
from hptransfer.pipeline.train import OptimSettings, TrainSettings

from common import RESULTS, write_result
from sweeps import add_sweep_arguments, sweep_settings, width_sweeps
from width_transfer import plot


def basin_fit(points: dict[str, float], keep: int = 5) -> float:
    """The vertex of a least-squares parabola through the ``keep`` lowest points of a sweep (log2 LR, loss): in a
    flat basin the lowest grid point and its two neighbours (the sweeps' parabola) move with each seed's noise,
    five points average it. Falls back to the lowest point when the fit is not convex."""
    finite = sorted((float(x), y) for x, y in points.items() if math.isfinite(y))
    lowest = sorted(finite, key=lambda p: p[1])[:keep]
    xs, ys = np.array([p[0] for p in lowest]), np.array([p[1] for p in lowest])
    if len(xs) < 3:
        return float(xs[np.argmin(ys)])
    a, b, _ = np.polyfit(xs, ys, 2)
    return float(np.clip(-b / (2 * a), xs.min(), xs.max())) if a > 0 else float(xs[np.argmin(ys)])


def depth_check(data, blocks: list[int], seeds: int, steps: int) -> dict:
    """Residual-stream coordinate check over blocks per stage at a fixed width: Depth-mu-P and CompleteP must
    pass, mu-P (no depth rule) must fail."""
    images, labels = data.train
    batch = (images[:32], labels[:32])
    results = {}
    for scheme in ("depth_mup", "completep", "mup"):
        def build(depth: int, scheme: str = scheme) -> torch.nn.Module:
            model = StandardResNet(BasicBlock, blocks=depth, stage_channels=(16, 32, 64), in_channels=1)
            with torch.device("meta"):
                base = StandardResNet(BasicBlock, blocks=1, stage_channels=(16, 32, 64), in_channels=1)
            hpt.parametrize(model, base, scheme, branches="layer*.*.bn2", example_inputs=batch[0])
            return model

        result = hpt.coord_check(build, blocks, axis="depth", data=batch, optimizer="adam", lr=1e-2, steps=steps,
                                 seeds=seeds)
        results[scheme] = {"verdict": result.verdict, "summary": result.summary(worst=6)}
        print(f"depth check {scheme}: {result.verdict}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--schemes", nargs="+", default=["sp", "mup"])
    parser.add_argument("--blocks", type=int, default=1, help="blocks per stage in the width sweep")
    parser.add_argument("--seeds", type=int, default=6, help="2 leave the optima of these flat basins +-1 octave")
    parser.add_argument("--grad-clip", type=float, default=0.0,
                        help="global gradient-norm clip (0: off). A fixed threshold binds at some widths and not at "
                             "others, so it acts as a width-dependent LR (BENCHMARKS.md section 1)")
    parser.add_argument("--steps", type=int, default=60,
                        help="short runs: at 300 steps of 64 every width solves digits and the basins go flat")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--depth-check", action="store_true", help="only the depth coordinate check")
    add_sweep_arguments(parser, start=-6.0)
    # digits' validation losses are small and noisy: a side of a sweep stops only 15% above the best
    parser.set_defaults(rise=0.15)
    parser.add_argument("--tag", default="")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.widths, args.seeds, args.steps, args.batch, args.bounds = [4, 8, 16], 1, 3, 16, [-7.5, -7]
    data = load_data(SimpleNamespace(kind="digits", path=None, val_fraction=0.3, seed=0))
    device = torch.device("cpu")
    started = time.perf_counter()
    payload: dict = {"widths": args.widths, "blocks": args.blocks, "seeds": args.seeds, "steps": args.steps,
                     "batch": args.batch, "grad_clip": args.grad_clip, "optimizer": "adam (0.9, 0.999)",
                     "data": "sklearn digits (8x8, 10 classes), 30% held out for the validation loss"}
    if args.depth_check or args.smoke:
        payload["depth_check"] = depth_check(data, [1, 2, 4] if args.smoke else [1, 2, 4, 8],
                                             1 if args.smoke else 3, 2 if args.smoke else 3)
    if not args.depth_check:
        spec = ModelSpec("standard_resnet", max(args.widths), args.blocks, min(args.widths), args.blocks,
                         {"d_in": 1, "d_out": 10})
        settings = TrainSettings(steps=args.steps, batch_size=args.batch, eval_every=0, grad_clip=args.grad_clip)
        optim = OptimSettings(name="adam", betas=(0.9, 0.999))
        results = {}
        for scheme in args.schemes:
            results[scheme] = width_sweeps(spec, scheme, data, settings, optim, args)
            fits = {size: basin_fit(sweep["points"]) for size, sweep in results[scheme]["sweeps"].items()}
            results[scheme]["basin_fit_optima"] = fits
            results[scheme]["basin_fit_spread_octaves"] = max(fits.values()) - min(fits.values())
            print(f"{scheme}: spread {results[scheme]['spread_octaves']:.2f} octaves (basin fit "
                  f"{results[scheme]['basin_fit_spread_octaves']:.2f}); wider better at log2 lr "
                  f"{results[scheme]['shared_log2_lr']}: {results[scheme]['larger_better_at_shared']}", flush=True)
        payload.update(results=results, sweep=sweep_settings(args))
    payload["seconds"] = time.perf_counter() - started
    name = "resnet_transfer" + ("-smoke" if args.smoke else "") + ("-depth" if args.depth_check else "") + (
        f"-{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = write_result(name, device, payload)
    if "results" in payload:
        plot(payload["results"], path.with_suffix(".png"), "width")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
