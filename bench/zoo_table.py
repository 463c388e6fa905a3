"""The model-zoo table: every member of tests/zoo.py parametrized as a user would, with what was measured.

For each member: its source, the outcome (right, or the error that refused it), and the worst relative error
against mu-P of each measured quantity (tests/zoo_measure.py: module output rms against real bases, averaged
over draws; parameter stds; every attention call's scale at the softmax input in every implementation; Adam
LRs), with the safety net's own summary. Each error is the worst over the member's quantities, relative to mu-P's
prediction; activations and stds are means over the draws given. The zoo and its measurement live with the tests (tests/zoo.py,
tests/zoo_measure.py, tests/zoo_run.py); this script only runs them and writes the table.

    python bench/zoo_table.py            # about a minute on 2 cores
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from zoo import BASE, WIDTH, ZOO  # noqa: E402
from zoo_run import evaluate  # noqa: E402

from common import RESULTS, write_result  # noqa: E402


def main() -> None:
    started = time.perf_counter()
    rows = []
    for variant in ZOO:
        outcome = evaluate(variant)
        expected = "refused" if variant.refused else "right"
        got = "refused" if outcome.refused else ("right" if not outcome.problems else "WRONG")
        row = {"name": variant.name, "source": variant.source, "expected": expected, "outcome": got,
               "refusal": (outcome.refused or "")[:240], "stats": outcome.stats, "seeds": outcome.seeds,
               "problems": outcome.problems, "check": (outcome.check or {}).get("summary", ""),
               "parametrize_s": outcome.seconds}
        rows.append(row)
        print(f"{variant.name}: {got}", flush=True)
    lines = ["| model | source | outcome | activations | stds (>= 4096 entries; smaller) | attention scales (calls) | "
             "Adam LRs | safety net |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        s = row["stats"]

        def pct(key: str) -> str:
            return f"{100 * s[key]:.1f}%" if key in s else "-"

        if row["outcome"] == "refused":
            what = row["refusal"].split(":")[0]
            lines.append(f"| {row['name']} | {row['source']} | refused ({what}) | | | | | {row['refusal'][:140]}... |")
        else:
            calls = int(s.get("attention calls", 0))
            lines.append(f"| {row['name']} | {row['source']} | {row['outcome']} | {pct('activation')} "
                         f"({row['seeds']} draws) | {pct('std')}; {pct('std, small tensors')} | "
                         f"{pct('attention scale')} ({calls}) | "
                         f"{pct('adam lr')} | {row['check'][:90]} |")
    table = "\n".join(lines)
    print(table)
    payload = {"base_width": BASE, "width": WIDTH, "rows": rows, "table": table,
               "seconds": time.perf_counter() - started,
               "right": sum(r["outcome"] == "right" for r in rows),
               "refused": sum(r["outcome"] == "refused" for r in rows),
               "wrong": sum(r["outcome"] == "WRONG" for r in rows),
               "as_expected": sum(r["outcome"] == r["expected"] for r in rows)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = write_result("zoo_table", torch.device("cpu"), payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
