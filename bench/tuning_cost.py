"""Tuning cost: tune the target directly vs tune a >= 8x smaller proxy and transfer (mu-P), with SP's proxy
LR transferred naively as the baseline that fails.

Reports the target's loss each way (transferred vs directly tuned best, relative gap; target: within 1%) and the
compute each way (wall time and FLOPs ~ 6 x params x tokens; target: proxy tuning <= 15% of direct tuning).

    python bench/tuning_cost.py            # CPU: GPT width 512 target, width 64 proxy (about 12 min)
    python bench/tuning_cost.py --smoke    # seconds; used by the tests
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch

from hptransfer.data import load_data
from hptransfer.models import ModelSpec
from hptransfer.pipeline.train import HParams, TrainSettings, train

from common import RESULTS, device_name, write_result
from sweeps import lr_sweep


def count_params(spec: ModelSpec, width: int) -> int:
    return sum(p.numel() for p in spec.build(width=width, device="meta").parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=int, default=512)
    parser.add_argument("--proxy", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--grid", type=float, nargs=2, default=[-13.0, -5.0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    batch, seq = 16, 64
    if args.smoke:
        args.target, args.proxy, args.steps, args.grid, batch, seq = 64, 32, 5, [-8, -7], 4, 16
    data = load_data(SimpleNamespace(kind="text", path=None, val_fraction=0.1))
    spec = ModelSpec("gpt", args.target, 2, args.proxy, 2, {**data.model_options, "n_head": 4, "block_size": seq,
                                                            "zero_init_readout": True, "zero_init_query": True})
    settings = TrainSettings(steps=args.steps, batch_size=batch, seq_len=seq, eval_every=0, eval_batches=4)
    grid = [float(x) for x in range(int(args.grid[0]), int(args.grid[1]) + 1)]
    seeds = list(range(args.seeds))
    tokens = args.steps * batch * seq

    def sweep(scheme: str, width: int):
        def run(log2_lr: float, seed: int) -> float:
            return train(spec, scheme, data, HParams(lr=2.0 ** log2_lr),
                         TrainSettings(**{**settings.__dict__, "seed": seed}), width=width).val_loss
        return lr_sweep(run, grid, seeds, refine=not args.smoke)

    def target_at(scheme: str, log2_lr: float) -> float:
        losses = [train(spec, scheme, data, HParams(lr=2.0 ** log2_lr),
                        TrainSettings(**{**settings.__dict__, "seed": seed}), width=args.target).val_loss
                  for seed in seeds]
        return sum(losses) / len(losses)

    direct = sweep("mup", args.target)
    proxy = sweep("mup", args.proxy)
    transferred = target_at("mup", proxy.optimum)
    sp_proxy = sweep("sp", args.proxy)
    sp_naive = target_at("sp", sp_proxy.optimum)
    trials = {"direct": len(direct.points) * len(seeds), "proxy": len(proxy.points) * len(seeds)}
    flops = {name: 6 * count_params(spec, width) * tokens * trials[name]
             for name, width in (("direct", args.target), ("proxy", args.proxy))}
    flops["proxy_plus_one_target"] = flops["proxy"] + 6 * count_params(spec, args.target) * tokens * len(seeds)
    result = {
        "target_width": args.target, "proxy_width": args.proxy, "steps": args.steps, "grid": grid, "seeds": args.seeds,
        "direct": {"best_loss": direct.best_loss, "optimum_log2_lr": direct.optimum, "seconds": direct.seconds},
        "mup_transfer": {"proxy_optimum_log2_lr": proxy.optimum, "target_loss": transferred,
                         "relative_gap": (transferred - direct.best_loss) / direct.best_loss,
                         "proxy_seconds": proxy.seconds},
        "sp_naive": {"proxy_optimum_log2_lr": sp_proxy.optimum, "target_loss": sp_naive,
                     "relative_gap": (sp_naive - direct.best_loss) / direct.best_loss},
        "compute": {"flops": flops, "flops_ratio_proxy_tuning": flops["proxy"] / flops["direct"],
                    "wall_time_ratio_proxy_tuning": proxy.seconds / direct.seconds},
        "sweeps": {"direct": direct.to_dict(), "proxy": proxy.to_dict(), "sp_proxy": sp_proxy.to_dict()},
    }
    print(f"direct tuning at width {args.target}: best loss {direct.best_loss:.4f} at log2 lr {direct.optimum:.2f}")
    print(f"mu-P proxy width {args.proxy} -> target: loss {transferred:.4f} "
          f"(gap {100 * result['mup_transfer']['relative_gap']:+.2f}%) at log2 lr {proxy.optimum:.2f}")
    print(f"SP proxy LR transferred naively: loss {sp_naive:.4f} (gap {100 * result['sp_naive']['relative_gap']:+.2f}%)")
    print(f"compute of proxy tuning / direct tuning: FLOPs {result['compute']['flops_ratio_proxy_tuning']:.3f}, "
          f"wall time {result['compute']['wall_time_ratio_proxy_tuning']:.3f}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = "tuning_cost" + ("-smoke" if args.smoke else "")
    path = write_result(name, device, result)
    plot(result, RESULTS / f"{name}-{device_name(device)}.png")
    print(f"wrote {path}")


def plot(result: dict, path) -> None:
    """The three sweeps, and the target's loss at each transferred LR against the directly tuned curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    curves = [("direct", f"mup, target width {result['target_width']} (tuned directly)", "C0"),
              ("proxy", f"mup, proxy width {result['proxy_width']}", "C1"),
              ("sp_proxy", f"sp, proxy width {result['proxy_width']}", "C3")]
    if result["sweeps"]["proxy"]["points"] == result["sweeps"]["sp_proxy"]["points"]:  # the proxy is the base
        curves[1:] = [("proxy", f"proxy width {result['proxy_width']} (the base: sp = mup)", "C1")]
    for key, label, color in curves:
        points = {float(k): v for k, v in result["sweeps"][key]["points"].items()}
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], "-o", ms=3, color=color, label=label)
    ax.plot(result["mup_transfer"]["proxy_optimum_log2_lr"], result["mup_transfer"]["target_loss"], "*", ms=14,
            color="C1", mec="k", label=f"target at mup proxy's optimum ({100 * result['mup_transfer']['relative_gap']:+.2f}%)")
    ax.plot(result["sp_naive"]["proxy_optimum_log2_lr"], result["sp_naive"]["target_loss"], "X", ms=11, color="C3",
            mec="k", label=f"target (sp) at sp proxy's optimum ({100 * result['sp_naive']['relative_gap']:+.2f}%)")
    best = result["direct"]["best_loss"]
    ax.set_ylim(best - 0.05, best + 1.0)
    ax.set_xlabel("log2 learning rate")
    ax.set_ylabel("validation loss")
    ratio = result["compute"]["flops_ratio_proxy_tuning"]
    ax.set_title(f"Tune the proxy and transfer: {100 * ratio:.1f}% of the FLOPs of tuning the target", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
