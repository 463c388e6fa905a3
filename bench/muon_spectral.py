"""The Muon rule, measured: after one step, each hidden matrix's ||dW||_2 * sqrt(fan_in / fan_out) across widths.

The spectral condition for feature learning asks for ||dW||_2 ~ sqrt(fan_out / fan_in), so the printed ratio
should be flat in width under mu-P's Muon rule, with either of torch's ``adjust_lr_fn``; under SP (torch's
defaults) it drifts like sqrt(width) with "match_rms_adamw" and stays flat with "original" (whose adjustment
already holds the condition for matrices of a fixed aspect ratio).

    python bench/muon_spectral.py            # seconds on CPU
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

import hptransfer as hpt
from hptransfer.models import GPT

from common import write_result


def gpt(width: int, device: str | None = None) -> GPT:
    kwargs = dict(d_model=width, n_layer=2, n_head=4, vocab_size=64, block_size=32)
    with torch.device(device or "cpu"):
        return GPT(**kwargs)


def ratios(width: int, scheme: str, adjust: str, lr: float) -> dict[str, float]:
    torch.manual_seed(0)
    model = gpt(width)
    hpt.parametrize(model, gpt(64, "meta"), scheme, delta=gpt(128, "meta"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = hpt.build_optimizer(model, "muon", lr=lr, adjust_lr_fn=adjust)
    x = torch.randint(0, 64, (8, 32), generator=torch.Generator().manual_seed(1))
    F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()
    muon = {id(p) for g in opt.param_groups if g["algorithm"] == "muon" for p in g["params"]}
    out = {}
    for name, p in model.named_parameters():
        if id(p) in muon:
            delta = p.detach() - before[name]
            out[name] = float(torch.linalg.matrix_norm(delta, ord=2)) * (delta.shape[1] / delta.shape[0]) ** 0.5
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args()
    rows = []
    print("| scheme | adjust_lr_fn | " + " | ".join(f"width {w}" for w in args.widths) + " | slope vs width |")
    print("|---|---|" + "---|" * len(args.widths) + "---|")
    for scheme in ("mup", "sp"):
        for adjust in ("original", "match_rms_adamw"):
            per_width = [ratios(w, scheme, adjust, args.lr) for w in args.widths]
            means = [float(np.mean(list(r.values()))) for r in per_width]
            slope = float(np.polyfit(np.log2(args.widths), np.log2(means), 1)[0])
            rows.append({"scheme": scheme, "adjust_lr_fn": adjust, "mean_ratio": means, "slope": slope,
                         "per_matrix": per_width})
            print(f"| {scheme} | {adjust} | " + " | ".join(f"{m:.4f}" for m in means) + f" | {slope:+.3f} |")
    path = write_result("muon_spectral", torch.device("cpu"), {"widths": args.widths, "lr": args.lr, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
