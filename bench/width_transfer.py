"""Width transfer: LR sweeps for sp and mup on the reference GPT (built-in text) across widths.

Each sweep is a half-octave grid grown from a guess until the basin is bracketed (bench/sweeps.py:basin_sweep).
Reports per scheme the interpolated optimal log2 LR per width, its spread in octaves (targets: mup <= 0.5,
sp >= 2) and whether wider was better at the shared LR (the half-octave point nearest the median optimum,
trained at every width).

    python bench/width_transfer.py                       # CPU small settings (about 14 min on 2 cores)
    python bench/width_transfer.py --widths 256 512 1024 2048 --steps 2000     # e.g. on a GPU
    python bench/width_transfer.py --grad-clip 0.0625 --tag clip0.0625   # the clip threshold of BENCHMARKS.md 1
    python bench/width_transfer.py --family hf_llama --tag hf_llama   # a transformers Llama, HF's own init
    python bench/width_transfer.py --optimizer muon --adjust-lr-fn match_rms_adamw --start -6 --tag muon
    python bench/width_transfer.py --optimizer lion --start -9 --no-zero-init --tag lion-init
    python bench/width_transfer.py --optimizer lion --no-zero-init --widths 64 128 256 512 --schemes mup \
        --start -6.5 --tag lion-init-64-512-mup         # and --schemes sp --tag ...-sp, side by side
    python bench/width_transfer.py --optimizer lion --no-zero-init --widths 512 --base-width 64 --schemes mup \
        --seeds 1 --first-seed 2 --tag lion-init-512-mup-seed2     # more seeds at one width of a finished run
    python bench/width_transfer.py --smoke               # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

from hptransfer.data import load_data
from hptransfer.models import ModelSpec
from hptransfer.pipeline.train import TrainSettings

from common import RESULTS, device_name, transfer_optim_settings, write_result
from sweeps import add_sweep_arguments, sweep_settings, width_sweeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="gpt", choices=["gpt", "hf_llama"],
                        help="gpt: hptransfer's reference GPT (zero-init readout and query); hf_llama: a "
                             "transformers LlamaForCausalLM with its own N(0, 0.02) init, parametrized through its adapter")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--schemes", nargs="+", default=["sp", "mup"])
    parser.add_argument("--base-width", type=int, default=None,
                        help="the base (proxy) width of mup (default: the smallest of --widths)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--grad-clip", type=float, default=TrainSettings.grad_clip,
                        help="global gradient-norm clip threshold (0: off); the same for every scheme and width")
    parser.add_argument("--no-zero-init", action="store_true",
                        help="gpt: keep the readout and query at their normal init (zero init is the default)")
    parser.add_argument("--optimizer", default="adamw", help="adamw, muon, lion, adafactor, sgd, ... "
                        "(hptransfer.build_optimizer); sp is then the optimizer's own defaults")
    parser.add_argument("--adjust-lr-fn", default="original", choices=["original", "match_rms_adamw"],
                        help="torch.optim.Muon's LR adjustment (muon only)")
    add_sweep_arguments(parser, start=-7.0)
    parser.add_argument("--tag", default="", help="appended to the result names (to split a run across calls)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.widths, args.seeds, args.steps, args.batch, args.seq, args.bounds = [32, 64, 128], 1, 5, 4, 16, [-7.5, -7]
    data = load_data(SimpleNamespace(kind="text", path=None, val_fraction=0.1))
    options = {"vocab_size": data.vocab_size, "n_head": 4, "block_size": args.seq}
    if args.family == "gpt" and not args.no_zero_init:
        options.update(zero_init_readout=True, zero_init_query=True)
    base_width = args.base_width or min(args.widths)
    spec = ModelSpec(args.family, max(args.widths), 2, base_width, 2, options)
    settings = TrainSettings(steps=args.steps, batch_size=args.batch, seq_len=args.seq, eval_every=0,
                             eval_batches=8 if not args.smoke else 1, grad_clip=args.grad_clip)
    optim = transfer_optim_settings(args.optimizer, args.adjust_lr_fn)
    started = time.perf_counter()
    results = {}
    for scheme in args.schemes:
        results[scheme] = width_sweeps(spec, scheme, data, settings, optim, args)
        print(f"{scheme}: spread {results[scheme]['spread_octaves']:.2f} octaves; wider better at log2 lr "
              f"{results[scheme]['shared_log2_lr']}: {results[scheme]['larger_better_at_shared']}", flush=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = "width_transfer" + ("-smoke" if args.smoke else "") + (f"-{args.tag}" if args.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = write_result(name, device, {"family": args.family, "zero_init": not args.no_zero_init,
                                       "optimizer": args.optimizer,
                                       "adjust_lr_fn": args.adjust_lr_fn, "widths": args.widths,
                                       "base_width": base_width, "seeds": args.seeds,
                                       "steps": args.steps,
                                       "batch": args.batch, "seq": args.seq, "grad_clip": args.grad_clip,
                                       "sweep": sweep_settings(args),
                                       "seconds": time.perf_counter() - started, "results": results})
    plot(results, RESULTS / f"{name}-{device_name(device)}.png", "width")
    print(f"wrote {path}")


def plot(results: dict, path, axis: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.0), squeeze=False, sharex=True,
                             sharey=True)
    for ax, (scheme, res) in zip(axes[0], results.items()):
        sizes = list(res["sweeps"])
        colors = plt.cm.viridis(np.linspace(0.1, 0.9, max(len(sizes), 2)))
        for color, size in zip(colors, sizes):
            pts = {float(k): v for k, v in res["sweeps"][size]["points"].items()}
            xs = sorted(pts)
            ax.plot(xs, [pts[x] for x in xs], "-o", ms=3, color=color, label=f"{axis} {size}")
            ax.axvline(res["optima"][size], color=color, ls=":", lw=1)
        finite = [v for r in results.values() for s in r["sweeps"].values() for v in s["points"].values()
                  if np.isfinite(v)]
        if finite:  # the basins, not the far tails
            ax.set_ylim(min(finite) - 0.02, min(max(finite), min(finite) + 0.3) + 0.02)
        ax.set_title(f"{scheme}: optimum spread {res['spread_octaves']:.2f} octaves", fontsize=10)
        ax.set_xlabel("log2 learning rate")
        ax.set_ylabel("validation loss (mean over seeds)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
