"""Width transfer: LR sweeps for sp and mup on the reference GPT (built-in text) across widths.

Reports per scheme the interpolated optimal log2 LR per width, its spread in octaves (targets: mup <= 0.5,
sp >= 2) and whether wider was better at the shared LR (the grid point nearest the median optimum).

    python bench/width_transfer.py                       # CPU small settings (~15 min on 2 cores)
    python bench/width_transfer.py --widths 256 512 1024 2048 --steps 1000     # e.g. on a GPU
    python bench/width_transfer.py --smoke               # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import statistics
from types import SimpleNamespace

import torch

from hptransfer.data import load_data
from hptransfer.models import ModelSpec
from hptransfer.train import HParams, TrainSettings, train

from common import RESULTS, device_name, write_result
from sweeps import lr_sweep, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--schemes", nargs="+", default=["sp", "mup"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--grid", type=float, nargs=2, default=[-14.0, -4.0], help="log2 LR range (octave grid)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.widths, args.seeds, args.steps, args.batch, args.seq, args.grid = [32, 64, 128], 1, 5, 4, 16, [-8, -6]
    data = load_data(SimpleNamespace(kind="text", path=None, val_fraction=0.1))
    options = {"vocab_size": data.vocab_size, "n_head": 4, "block_size": args.seq,
               "zero_init_readout": True, "zero_init_query": True}
    spec = ModelSpec("gpt", max(args.widths), 2, min(args.widths), 2, options)
    settings = TrainSettings(steps=args.steps, batch_size=args.batch, seq_len=args.seq, eval_every=0,
                             eval_batches=4 if not args.smoke else 1)
    grid = [float(x) for x in range(int(args.grid[0]), int(args.grid[1]) + 1)]
    results = {}
    for scheme in args.schemes:
        sweeps = {}
        for width in args.widths:
            def run(log2_lr: float, seed: int, width: int = width) -> float:
                result = train(spec, scheme, data, HParams(lr=2.0 ** log2_lr),
                               TrainSettings(**{**settings.__dict__, "seed": seed}), width=width)
                return result.val_loss
            sweeps[width] = lr_sweep(run, grid, list(range(args.seeds)), refine=not args.smoke)
            print(f"{scheme} width {width}: optimum log2 lr {sweeps[width].optimum:.2f} "
                  f"(best loss {sweeps[width].best_loss:.4f}, {sweeps[width].seconds:.0f} s)", flush=True)
        optima = [s.optimum for s in sweeps.values()]
        shared = min(grid, key=lambda x: abs(x - statistics.median(optima)))
        at_shared = [sweeps[w].loss_at(shared) for w in args.widths]
        results[scheme] = {"optima": {str(w): s.optimum for w, s in sweeps.items()}, "spread_octaves": spread(optima),
                           "shared_log2_lr": shared, "loss_at_shared": at_shared,
                           "wider_better_at_shared": all(b < a for a, b in zip(at_shared, at_shared[1:])),
                           "sweeps": {str(w): s.to_dict() for w, s in sweeps.items()}}
        print(f"{scheme}: spread {spread(optima):.2f} octaves; wider better at log2 lr {shared}: "
              f"{results[scheme]['wider_better_at_shared']}", flush=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = "width_transfer" + ("-smoke" if args.smoke else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = write_result(name, device, {"widths": args.widths, "seeds": args.seeds, "steps": args.steps,
                                       "batch": args.batch, "seq": args.seq, "grid": grid, "results": results})
    plot(results, RESULTS / f"{name}-{device_name(device)}.png", "width")
    print(f"wrote {path}")


def plot(results: dict, path, axis: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.0), squeeze=False)
    for ax, (scheme, res) in zip(axes[0], results.items()):
        sizes = list(res["sweeps"])
        colors = plt.cm.viridis(np.linspace(0.1, 0.9, max(len(sizes), 2)))
        for color, size in zip(colors, sizes):
            pts = {float(k): v for k, v in res["sweeps"][size]["points"].items()}
            xs = sorted(pts)
            ax.plot(xs, [pts[x] for x in xs], "-o", ms=3, color=color, label=f"{axis} {size}")
            ax.axvline(res["optima"][size], color=color, ls=":", lw=1)
        finite = [v for s in res["sweeps"].values() for v in s["points"].values() if np.isfinite(v)]
        if finite:
            ax.set_ylim(min(finite) - 0.05, min(finite) + 1.5)
        ax.set_title(f"{scheme}: optimum spread {res['spread_octaves']:.2f} octaves", fontsize=10)
        ax.set_xlabel("log2 learning rate")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
