"""Why Lion's width optimum drifts at small widths under mu-P: its hidden layers' own updates, measured.

mu-P's rule for a hidden matrix assumes the step is aligned with the layer's input, so that ``(W_t - W_0) x``
grows like lr * fan_in and lr ~ 1/fan_in keeps it constant. A sign step (Lion) gives every entry the full
magnitude, also the entries where the momentum is mostly gradient noise; that part of the step is not aligned
with x and adds only ~ lr * sqrt(fan_in) to ``(W_t - W_0) x``. Under mu-P it fades like fan_in^-1/2, so where it
dominates, the useful update shrinks with width and wider models want a larger base LR, until the width is
large enough for the aligned part to dominate. Larger batches (less noise) get there sooner. Adam scales noisy
entries down by their second moment, so it is less exposed.

This runs the coordinate check on the reference GPT (built-in text, a fresh batch per step) for each setting
and prints the mean slope of log2 |(W_t - W_0) x| against log2 width over steps 10..steps (after the momentum
has built up): 0 is mu-P's ideal, -0.5 is a step made of noise.

    python bench/sign_alignment.py           # about 10 minutes at one CPU thread
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

import hptransfer as hpt
from hptransfer.data import load_data
from hptransfer.models import GPT

from common import write_result

# (optimizer, log2 lr, batch x seq, widths): Lion across tokens per step and widths, AdamW and Adafactor for
# comparison. The LRs are near each optimizer's tuned mu-P optimum on this task (BENCHMARKS.md 1 and 8).
SETTINGS = [
    ("lion", -6.5, (4, 64), (32, 64, 128, 256)),
    ("lion", -6.5, (16, 64), (32, 64, 128, 256)),
    ("lion", -6.5, (64, 64), (32, 64, 128, 256)),
    ("lion", -6.5, (16, 64), (64, 128, 256, 512)),
    ("adamw", -5.5, (16, 64), (32, 64, 128, 256)),
    ("adafactor", -4.0, (16, 64), (64, 128, 256, 512)),
]


def own_update_slopes(data, optimizer: str, log2_lr: float, batch: int, seq: int, widths: tuple[int, ...],
                      steps: int, seeds: int) -> dict[int, float]:
    """Mean over hidden layers of the own-update slope at each step (mu-P, normal readout/query init)."""
    def gpt(width: int, device: str = "cpu") -> GPT:
        with torch.device(device):
            return GPT(d_model=width, n_layer=2, n_head=4, vocab_size=data.vocab_size, block_size=seq)

    def build(width: int) -> GPT:
        model = gpt(width)
        hpt.parametrize(model, gpt(widths[0], "meta"), "mup", delta=gpt(2 * widths[0], "meta"))
        return model

    generator = torch.Generator().manual_seed(0)
    batches = [data.batch("train", batch, seq, generator) for _ in range(steps + 1)]
    result = hpt.coord_check(build, list(widths), data=batches, optimizer=optimizer, lr=2.0 ** log2_lr,
                             steps=steps, seeds=seeds, progress=False)
    own = [s for s in result.slopes if s.kind == "own"]
    return {step: statistics.mean(s.slope for s in own if s.step == step) for step in sorted({s.step for s in own})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    settings = SETTINGS
    if args.smoke:
        args.steps, args.seeds, settings = 3, 1, [("lion", -6.5, (2, 16), (32, 64, 128))]
    data = load_data(SimpleNamespace(kind="text", path=None, val_fraction=0.1))
    started = time.perf_counter()
    rows = []
    for optimizer, log2_lr, (batch, seq), widths in settings:
        slopes = own_update_slopes(data, optimizer, log2_lr, batch, seq, widths, args.steps, args.seeds)
        late = [v for step, v in slopes.items() if step >= min(10, args.steps)]
        rows.append({"optimizer": optimizer, "log2_lr": log2_lr, "tokens_per_step": batch * seq,
                     "widths": list(widths), "mean_slope_late": statistics.mean(late), "slopes": slopes})
        print(f"{optimizer:6s} tokens/step {batch * seq:5d} widths {widths[0]}..{widths[-1]}: own-update slope "
              f"{statistics.mean(late):+.3f} (mean over steps {min(10, args.steps)}..{args.steps})", flush=True)
    name = "sign_alignment" + ("-smoke" if args.smoke else "")
    path = write_result(name, torch.device("cpu"), {"steps": args.steps, "seeds": args.seeds, "rows": rows,
                                                    "seconds": time.perf_counter() - started})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
