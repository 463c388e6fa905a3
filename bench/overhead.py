"""Training-step overhead of a parametrized model vs the same unwrapped model (interleaved, median ratio).

The parametrized model is the plain reference GPT wrapped with CompleteP (hooks on every branch, the
readout and the attention mode: the most hptransfer ever adds); the unwrapped one is a copy with the same
weights and one AdamW group. Each candidate also gets tokens/s and, on a GPU whose peak is known (or with
--peak-tflops), model FLOPs utilization: (6 x matmul parameters + 12 x layers x width x seq) FLOPs per token
(PaLM's count, causal attention not halved) over the device's dense peak. Usage:

    python bench/overhead.py                      # CPU, width 256, eager and compiled
    python bench/overhead.py --width 1024 --depth 8 --batch 16 --seq 1024 --dtype bf16   # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
import torch.nn.functional as F

import hptransfer as hpt
from hptransfer.models import PlainGPT

from common import RESULTS, device_name, interleaved, median_ratio, write_result

# Dense (no sparsity) peak tensor-core TFLOP/s by device-name fragment, from the vendors' data sheets.
PEAK_TFLOPS = {"bf16": {"h100": 989.4, "h200": 989.4, "a100": 312.0, "l40s": 362.0, "l4": 121.0}}


def peak_tflops(device: torch.device, dtype: str, override: float | None) -> float | None:
    """The device's dense peak for ``dtype``, or None where it is not known (CPUs; fp32, whose peak depends on
    the TF32 setting)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    table = PEAK_TFLOPS.get(dtype, {})
    return next((value for key, value in sorted(table.items(), key=lambda kv: -len(kv[0])) if key in name), None)


def flops_per_token(model: torch.nn.Module, seq: int) -> float:
    """Training FLOPs per token: 6 per weight of every Linear (forward + backward) plus attention's scores and
    weighted sum, 12 x layers x width x seq."""
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 6.0 * matmul + 12.0 * len(model.blocks) * model.lm_head.in_features * seq


def build(width: int, depth: int, device: torch.device):
    torch.manual_seed(0)
    plain = PlainGPT(d_model=width, n_layer=depth, n_head=4, vocab_size=96, block_size=128).to(device)
    wrapped = copy.deepcopy(plain)
    with torch.device("meta"):
        base = PlainGPT(d_model=64, n_layer=2, n_head=4, vocab_size=96, block_size=128)
    hpt.parametrize(wrapped, base, "completep", branches=["blocks.*.attn", "blocks.*.mlp"], base_head_dim=16,
                    init="keep")
    return plain, wrapped, base


def build_mup(plain: torch.nn.Module, base: torch.nn.Module, device: torch.device):
    """The same model under the mup package: MuReadout head, set_base_shapes, MuAdamW (None without mup)."""
    try:
        import mup
    except ImportError:
        return None, None
    model = copy.deepcopy(plain)
    width, vocab = model.lm_head.in_features, model.lm_head.out_features
    model.lm_head = mup.MuReadout(width, vocab, bias=False).to(device)
    with torch.device("meta"):  # mup has no depth rule: its base needs the model's own depth (same names)
        mup_base = PlainGPT(d_model=64, n_layer=len(plain.blocks), n_head=4, vocab_size=vocab, block_size=128)
    mup_base.lm_head = mup.MuReadout(64, vocab, bias=False, device="meta")
    mup.set_base_shapes(model, mup_base)
    return model, mup.MuAdamW(model.parameters(), lr=1e-3, weight_decay=0.1)


def state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes held by parameters and optimizer state (what parametrization could add to)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    for state in opt.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


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
            device: torch.device, dtype: torch.dtype, peak: float | None) -> dict:
    plain, wrapped, base = build(width, depth, device)  # base: hptransfer's (shallower) base
    fused = device.type == "cuda"
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-3, weight_decay=0.1, fused=fused)
    opt_wrapped = torch.optim.AdamW(hpt.param_groups(wrapped, lr=1e-3, weight_decay=0.1), fused=fused)
    models = {"unwrapped": (plain, opt_plain), "parametrized": (wrapped, opt_wrapped)}
    mup_model, mup_opt = build_mup(plain, base, device)
    if mup_model is not None:
        models["mup"] = (mup_model, mup_opt)
    data = torch.randint(0, 96, (batch, seq), device=device)
    candidates = {name: step_fn(torch.compile(m) if compile_ else m, o, data, dtype) for name, (m, o) in models.items()}
    for fn in candidates.values():  # warm-up (and compilation)
        for _ in range(3):
            fn()
    times = interleaved(candidates, repeats, steps, device)
    result = {"compiled": compile_, "ratio_median": median_ratio(times, "parametrized", "unwrapped"),
              **{f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()},
              "repeats_ms": {name: [1e3 * x for x in t] for name, t in times.items()},
              "state_bytes": {name: state_bytes(m, o) for name, (m, o) in models.items()}}
    per_token = flops_per_token(plain, seq)
    result["flops_per_token"] = per_token
    result["tokens_per_s"] = {name: batch * seq / statistics.median(t) for name, t in times.items()}
    result["mfu"] = ({name: rate * per_token / (peak * 1e12) for name, rate in result["tokens_per_s"].items()}
                     if peak else None)
    if "mup" in times:
        result["ratio_vs_mup_median"] = median_ratio(times, "parametrized", "mup")
    if device.type == "cuda":
        result["peak_bytes"] = {}
        for name, fn in candidates.items():
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            result["peak_bytes"][name] = torch.cuda.max_memory_allocated(device)
    return result


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
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak, for MFU where it is not known")
    parser.add_argument("--smoke", action="store_true", help="tiny and quick; used by the tests")
    args = parser.parse_args()
    if args.smoke:
        args.width, args.depth, args.batch, args.seq, args.repeats, args.steps, args.no_compile = 64, 3, 2, 16, 2, 1, True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    peak = peak_tflops(device, args.dtype, args.peak_tflops)
    runs = []
    for compile_ in ([False] if not args.no_eager else []) + ([True] if not args.no_compile else []):
        result = measure(args.width, args.depth, args.batch, args.seq, compile_, args.repeats, args.steps,
                         device, dtype, peak)
        runs.append(result)
        mode = "compiled" if compile_ else "eager"
        vs_mup = f", vs mup {result['ratio_vs_mup_median']:.3f}" if "ratio_vs_mup_median" in result else ""
        print(f"{mode:9s} parametrized/unwrapped step time: median ratio {result['ratio_median']:.3f}{vs_mup} "
              f"({result['parametrized_ms']:.1f} ms vs {result['unwrapped_ms']:.1f} ms); state bytes "
              f"{result['state_bytes']}")
        rates = ", ".join(f"{name} {rate:,.0f}" for name, rate in result["tokens_per_s"].items())
        mfu = (", MFU " + ", ".join(f"{name} {100 * v:.1f}%" for name, v in result["mfu"].items())
               if result["mfu"] else " (MFU: peak unknown for this device; see --peak-tflops)")
        print(f"{'':9s} tokens/s: {rates}{mfu}")
    name = "overhead" + ("-smoke" if args.smoke else "")
    plot(runs, RESULTS / f"{name}-{device_name(device)}.png", f"{device_name(device)}, {args.dtype}")
    path = write_result(name, device, {"width": args.width, "depth": args.depth, "batch": args.batch,
                                             "seq": args.seq, "dtype": args.dtype, "repeats": args.repeats,
                                             "peak_tflops": peak,
                                             "steps_per_repeat": args.steps, "runs": runs})
    print(f"wrote {path}")


def plot(runs: list[dict], path, label: str) -> None:
    """Median step time per candidate and mode, with every repeat as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), squeeze=False)
    for ax, run in zip(axes[0], runs):
        names = list(run["repeats_ms"])
        for i, name in enumerate(names):
            ax.bar(i, run[f"{name}_ms"], color=f"C{i}", alpha=0.6)
            ax.plot([i] * len(run["repeats_ms"][name]), run["repeats_ms"][name], "k.", ms=3)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("ms per training step")
        mode = "torch.compile" if run["compiled"] else "eager"
        ax.set_title(f"{mode}, {label}\nparametrized / unwrapped: {run['ratio_median']:.3f} (median)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
