"""Every script in examples/ runs as written and prints what it promises (subprocesses, as a user runs them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXPECTED = {
    "hf_llama.py": [r"adapter=transformers:llama", r"resumed from a checkpoint"],
    "hf_gpt2.py": [r"adapter=transformers:gpt2", r"depth_mult 4, branch multiplier 0\.25"],
    "hf_bert.py": [r"adapter=transformers:bert", r"completep refused: .*post-LN"],
    "handwritten_attention.py": [r"refused: attention in 'blocks\.0\.attn'.* is hand-written.*no attribute of its "
                                 r"module sets it", r"attention scale now 0\.0625 .* found in \[\('blocks\.0\.attn', "
                                 r"'scale'\)"],
    "nanogpt_init.py": [r"law 'constant'", r"c_attn std 0\.0070"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script):
    if script.startswith("hf_"):
        pytest.importorskip("transformers", reason="the [hf] extra (transformers) is not installed")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, script], cwd=EXAMPLES, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for pattern in EXPECTED[script]:
        assert re.search(pattern, done.stdout), (pattern, done.stdout[-2000:])
    losses = re.findall(r"loss (\d+\.\d+) -> (\d+\.\d+)", done.stdout)
    assert losses and float(losses[0][1]) < float(losses[0][0])  # it trained


def test_every_example_is_tested():
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_") and p.name != "my_model.py"}
    assert scripts == set(EXPECTED)
