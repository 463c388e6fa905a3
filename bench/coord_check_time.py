"""Wall time of a width coordinate check of the reference GPT: 4 widths x 3 seeds x 5 steps.

Target: under 30 s on 2 CPU cores. Also renders the passing (mu-P) and
failing (SP) checks used as pictures in README.md. Usage: python bench/coord_check_time.py [--widths ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hptransfer import coord_check
from hptransfer.data import text_batch
from hptransfer.models import ModelSpec

from common import write_result

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--pictures", action="store_true", help="also write docs/coord_check_{mup,sp}.png")
    args = parser.parse_args()
    inputs, targets, vocab = text_batch(1, 8)
    spec = ModelSpec("gpt", 256, 2, 128, 2, {"vocab_size": vocab, "n_head": 4, "block_size": 64,
                                             "zero_init_readout": True, "zero_init_query": True})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    timings = {}
    for scheme in ("mup", "sp"):
        start = time.perf_counter()
        result = coord_check(lambda w: spec.parametrized(scheme, width=w), args.widths, data=(inputs, targets),
                             steps=args.steps, seeds=args.seeds, device=device)
        timings[scheme] = {"seconds": time.perf_counter() - start, "ok": result.ok,
                           "failures": len(result.failures), "slopes": len(result.slopes)}
        print(f"{scheme}: {timings[scheme]['seconds']:.1f} s, verdict {'PASS' if result.ok else 'FAIL'} "
              f"({len(result.failures)} of {len(result.slopes)} slopes outside their band)")
        if args.pictures:
            DOCS.mkdir(exist_ok=True)
            result.plot(DOCS / f"coord_check_{scheme}.png")
    path = write_result("coord_check_time", device, {"widths": args.widths, "seeds": args.seeds,
                                                     "steps": args.steps, "tokens": int(targets.numel()),
                                                     "runs": timings})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
