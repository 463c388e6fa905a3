"""What the measured safety net costs: parametrize() with and without it (check=True / check=False), on
1024-wide models, interleaved repeats, median times and their ratio; for scale, one training step of the model.

The net runs one small forward of the model and one of each base draw (three of a generic meta base, one of a
rebuilt transformers base), on the probe inputs (2 x 8 tokens here). Models:
- hf_llama: transformers' LlamaForCausalLM, width 1024, 4 layers, a meta base of width 64 (the adapter rebuilds
  it on the CPU);
- plain_gpt: a plain PyTorch GPT (SDPA), width 1024, 4 layers, a meta base of width 64 (materialized 3x).

    python bench/safety_net_cost.py             # about a minute on 2 cores
    python bench/safety_net_cost.py --smoke     # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import hptransfer as hpt
from hptransfer.models import PlainGPT

from common import device_name, write_result

VOCAB = 256


def hf_llama(width: int, depth: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth,
                         num_attention_heads=8, num_key_value_heads=4, vocab_size=VOCAB, max_position_embeddings=64,
                         attn_implementation="sdpa")
    return LlamaForCausalLM(config)


def plain_gpt(width: int, depth: int) -> torch.nn.Module:
    return PlainGPT(d_model=width, n_layer=depth, n_head=8, vocab_size=VOCAB, block_size=64)


MODELS = {"hf_llama": hf_llama, "plain_gpt": plain_gpt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--base-width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.width, args.repeats = 128, 1
    device = torch.device("cpu")
    inputs = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    results = {}
    for name, build in MODELS.items():
        torch.manual_seed(0)
        template = build(args.width, args.depth)
        with torch.device("meta"):
            base = build(args.base_width, args.depth)
        times: dict[str, list[float]] = {"check": [], "no_check": []}
        reported = []
        for repeat in range(args.repeats):
            for check in ((True, False) if repeat % 2 == 0 else (False, True)):
                model = copy.deepcopy(template)
                start = time.perf_counter()
                plan = hpt.parametrize(model, base, "mup", example_inputs=inputs, check=check)
                times["check" if check else "no_check"].append(time.perf_counter() - start)
                if check:
                    reported.append(plan.check["seconds"])
        # one training step of the model for scale (batch 8 x 64 tokens, AdamW)
        model = copy.deepcopy(template)
        hpt.parametrize(model, base, "mup", example_inputs=inputs, check=False)
        optimizer = hpt.build_optimizer(model, "adamw", lr=1e-3)
        batch = torch.randint(0, VOCAB, (8, 64))
        steps = []
        for _ in range(3):
            start = time.perf_counter()
            out = model(batch)
            logits = out.logits if hasattr(out, "logits") else out
            logits.float().pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            steps.append(time.perf_counter() - start)
        median = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {
            "parametrize_s": median, "net_s": median["check"] - median["no_check"],
            "ratio": statistics.median(a / b for a, b in zip(times["check"], times["no_check"])),
            "net_reported_s": statistics.median(reported), "train_step_s": statistics.median(steps),
            "params": sum(p.numel() for p in template.parameters()), "times": times}
        print(f"{name}: parametrize {median['no_check']:.3f} s without the net, {median['check']:.3f} s with it "
              f"(x{results[name]['ratio']:.2f}; the net itself {results[name]['net_reported_s']:.3f} s); one "
              f"training step {results[name]['train_step_s']:.3f} s", flush=True)
    path = write_result("safety_net_cost" + ("-smoke" if args.smoke else ""), device,
                        {"width": args.width, "base_width": args.base_width, "depth": args.depth,
                         "repeats": args.repeats, "probe_inputs": list(inputs.shape), "results": results})
    print(f"wrote {path} ({device_name(device)})")


if __name__ == "__main__":
    main()
