"""Training-step overhead of a parametrized model vs the same unwrapped model (interleaved, median ratio).

The parametrized model is the plain reference GPT wrapped with CompleteP (hooks on every branch, the
readout and the attention mode: the most hptransfer ever adds); the unwrapped one is a copy with the same
weights and one AdamW group. Usage:

    python bench/overhead.py                      # CPU, width 256, eager and compiled
    python bench/overhead.py --width 1024 --dtype bf16 --no-compile   # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F

import hptransfer as hpt
from hptransfer.models import PlainGPT

from common import interleaved, median_ratio, write_result


def build(width: int, depth: int, device: torch.device):
    torch.manual_seed(0)
    plain = PlainGPT(d_model=width, n_layer=depth, n_head=4, vocab_size=96, block_size=128).to(device)
    wrapped = copy.deepcopy(plain)
    with torch.device("meta"):
        base = PlainGPT(d_model=64, n_layer=2, n_head=4, vocab_size=96, block_size=128)
    hpt.parametrize(wrapped, base, "completep", branches=["blocks.*.attn", "blocks.*.mlp"], base_head_dim=16,
                    init="keep")
    return plain, wrapped


def step_fn(model, opt, batch, dtype):
    device_type = batch.device.type

    def step():
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(batch)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def measure(width: int, depth: int, batch: int, seq: int, compile_: bool, repeats: int, steps: int,
            device: torch.device, dtype: torch.dtype) -> dict:
    plain, wrapped = build(width, depth, device)
    fused = device.type == "cuda"
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-3, weight_decay=0.1, fused=fused)
    opt_wrapped = torch.optim.AdamW(hpt.param_groups(wrapped, lr=1e-3, weight_decay=0.1), fused=fused)
    if compile_:
        plain, wrapped = torch.compile(plain), torch.compile(wrapped)
    data = torch.randint(0, 96, (batch, seq), device=device)
    candidates = {"unwrapped": step_fn(plain, opt_plain, data, dtype),
                  "parametrized": step_fn(wrapped, opt_wrapped, data, dtype)}
    for fn in candidates.values():  # warm-up (and compilation)
        for _ in range(3):
            fn()
    times = interleaved(candidates, repeats, steps, device)
    return {
        "compiled": compile_,
        "ratio_median": median_ratio(times, "parametrized", "unwrapped"),
        "unwrapped_ms": 1e3 * statistics.median(times["unwrapped"]),
        "parametrized_ms": 1e3 * statistics.median(times["parametrized"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-eager", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    runs = []
    for compile_ in ([False] if not args.no_eager else []) + ([True] if not args.no_compile else []):
        result = measure(args.width, args.depth, args.batch, args.seq, compile_, args.repeats, args.steps,
                         device, dtype)
        runs.append(result)
        mode = "compiled" if compile_ else "eager"
        print(f"{mode:9s} parametrized/unwrapped step time: median ratio {result['ratio_median']:.3f} "
              f"({result['parametrized_ms']:.1f} ms vs {result['unwrapped_ms']:.1f} ms)")
    path = write_result("overhead", device, {"width": args.width, "depth": args.depth, "batch": args.batch,
                                             "seq": args.seq, "dtype": args.dtype, "repeats": args.repeats,
                                             "steps_per_repeat": args.steps, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
