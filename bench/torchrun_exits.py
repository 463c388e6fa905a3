"""Does every torchrun path exit 0 after success, every time? Runs the target recipe on 2 CPU processes (gloo)
under DDP and FSDP2 ``--repeats`` times each and prints the exit codes.

    python bench/torchrun_exits.py --repeats 10     # about 3 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    codes: dict[str, list[int]] = {"ddp": [], "fsdp2": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for parallel in codes:
                command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "recipes" / "transfer.py"), "experiment=smoke", "coord_check.enabled=false",
                           "proxy.sizes=[32]", "train.steps=8", "lr=0.003", f"train.parallel={parallel}",
                           f"hydra.run.dir={tmp}/{parallel}-{repeat}"]
                proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
                codes[parallel].append(proc.returncode)
                if proc.returncode:
                    print(f"{parallel} run {repeat}: exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-2000:]}")
    for parallel, got in codes.items():
        print(f"{parallel}: {args.repeats} runs, exit codes {dict(Counter(got))}")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
