"""Why mu-P loses to SP on the transformers Llama of bench/head_to_head.py: retrain the target (width 256) at the
arms' chosen values with one thing changed, on seeds 1-3.

    python bench/llama_gap.py --part clip   # SP without its clip; mu-P with clip 1/4 and 1/16 (about 4 min)
    python bench/llama_gap.py --part init   # mu-P with HF's init kept at 0.02, attention x sqrt(8), both (3 min)

Reads bench/results/head_to_head-llama-cpu-2t.json; writes llama_gap-{part}-cpu-2t.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from hptransfer.pipeline.train import HParams
from hptransfer.pipeline.tune import with_values

from common import RESULTS, write_result
from head_to_head import interval, setup


def cases(arms: dict, part: str) -> list[tuple[str, str, dict]]:
    """(label, scheme, values) of each retrained configuration."""
    if part == "clip":
        return [("sp_direct clip 0.0", "sp", {**arms["sp_direct"]["chosen"], "grad_clip": 0.0}),
                ("mutransfer clip 0.25", "mup", {**arms["mutransfer"]["chosen"], "grad_clip": 0.25}),
                ("mutransfer clip 0.0625", "mup", {**arms["mutransfer"]["chosen"], "grad_clip": 0.0625}),
                ("mup_direct clip 0.0625", "mup", {**arms["mup_direct"]["chosen"], "grad_clip": 0.0625})]
    chosen = arms["mutransfer"]["chosen"]
    return [("attn x sqrt(8)", "mup", {**chosen, "attn": chosen["attn"] * 8**0.5}),
            ("init keep (HF's 0.02 at every width)", "mup", {**chosen, "init": "keep"}),
            ("both", "mup", {**chosen, "attn": chosen["attn"] * 8**0.5, "init": "keep"})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["clip", "init"], required=True)
    args = parser.parse_args()
    arms = json.loads((RESULTS / "head_to_head-llama-cpu-2t.json").read_text())["arms"]
    s = setup("llama", False, Path(tempfile.mkdtemp()))
    out = {}
    for label, scheme, values in cases(arms, args.part):
        losses = [s.run(scheme, 256, with_values(HParams(), values), seed).val_loss for seed in (1, 2, 3)]
        out[label] = {"losses": losses, **interval(losses)}
        print(label, [round(x, 4) for x in losses], round(statistics.fmean(losses), 4), flush=True)
    write_result(f"llama_gap-{args.part}", torch.device("cpu"), {"cases": out})


if __name__ == "__main__":
    main()
