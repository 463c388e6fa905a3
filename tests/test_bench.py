"""Smoke versions of every benchmark script: they run in seconds and write their JSON (into a temp dir)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

def overhead_ok(d: dict) -> bool:
    run = d["runs"][0]
    return (run["state_bytes"]["unwrapped"] == run["state_bytes"]["parametrized"]
            and all(rate > 0 for rate in run["tokens_per_s"].values())
            and (run["mfu"] is None) == (d["peak_tflops"] is None))


def transfer_ok(results: dict, schemes: set[str], sizes: int) -> bool:
    """Every scheme has an optimum per size and every size was trained at the shared LR."""
    return set(results) == schemes and all(
        len(r["optima"]) == sizes and len(r["loss_at_shared"]) == sizes
        and all(math.isfinite(v) for v in r["loss_at_shared"]) for r in results.values())


SCRIPTS = {
    "overhead.py": ("overhead-smoke", overhead_ok),
    "width_transfer.py": ("width_transfer-smoke", lambda d: transfer_ok(d["results"], {"sp", "mup"}, 3)),
    "depth_transfer.py": ("depth_transfer-smoke", lambda d: all(
        transfer_ok(d["models"][m]["results"], {"mup", "depth_mup", "completep"}, 3) for m in ("resmlp", "gpt"))),
    "tuning_cost.py": ("tuning_cost-smoke", lambda d: 0 < d["compute"]["flops_ratio_proxy_tuning"] < 1),
    "coord_check_time.py": ("coord_check_time", lambda d: d["runs"]["mup"]["ok"] and not d["runs"]["sp"]["ok"]),
    "sign_alignment.py": ("sign_alignment-smoke", lambda d: len(d["rows"]) == 1 and all(
        math.isfinite(v) for v in d["rows"][0]["slopes"].values()) and len(d["rows"][0]["slopes"]) == 3),
    # the multiplier reaches the hidden matrices: the same seed trains to another loss
    "hidden_lr_ablation.py": ("hidden_lr_ablation-smoke", lambda d: len(d["rows"]) == 2 and all(
        math.isfinite(r["mean"]) for r in d["rows"]) and d["rows"][0]["mean"] != d["rows"][1]["mean"]),
    # every fault of the smoke grid FAILs (the smoke widths are too small to judge the correct scheme)
    "coord_faults.py": ("coord_faults-smoke", lambda d: len(d["cases"]) == 7 and all(
        c["verdict"] == "FAIL" for c in d["cases"] if c["fault"]) and "| gpt | adamw |" in d["table"]),
    # the standard ResNet on digits: both schemes swept, and the depth check judged (Depth-mu-P, CompleteP, mu-P)
    "resnet_transfer.py": ("resnet_transfer-smoke", lambda d: transfer_ok(d["results"], {"sp", "mup"}, 3)
                           and set(d["depth_check"]) == {"depth_mup", "completep", "mup"}),
    # three arms searched and retrained on 2 seeds; the proxy's search cost less than the direct ones; a ladder
    "head_to_head.py": ("head_to_head-gpt-smoke", lambda d: set(d["arms"]) == {"sp_direct", "mup_direct", "mutransfer"}
                        and all(len(a["target_losses"]) == 2 and "lr" in a["chosen"] and len(a["log"]) == 3
                                for a in d["arms"].values())
                        and 0 < d["verdict"]["compute_ratio"] < 1 and list(d["ladder"]) == ["8", "16", "32", "64"]),
    # the global gradient norm grows with width under SP and does not under mu-P
    "grad_norm_width.py": ("grad_norm_width-smoke", lambda d: d["schemes"]["sp"]["median_exponent"] > 0.2
                           and d["schemes"]["mup"]["median_exponent"] < 0),
    # the smoke runs every axis; the last written is weight decay, with its prediction, measurement and regrets
    "axes_transfer.py": ("axes_transfer-weight_decay-smoke", lambda d: d["axis"] == "weight_decay" and all(
        math.isfinite(d[k]) for k in ("error_octaves", "naive_error_octaves", "regret", "naive_regret"))
        and d["transfer"]["weight_decay"]["rules"] == ["wd_timescale"]),
    # the net's own seconds are part of parametrize's, and both models were timed
    "safety_net_cost.py": ("safety_net_cost-smoke", lambda d: set(d["results"]) == {"hf_llama", "plain_gpt"} and all(
        0 < r["net_reported_s"] <= r["parametrize_s"]["check"] for r in d["results"].values())),
}


SLOW_SMOKES = {"axes_transfer.py"}  # run by the slow set: the fast one stays near 5 minutes


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW_SMOKES else s
                                    for s in SCRIPTS])
def test_benchmark_smoke(script, tmp_path):
    prefix, check = SCRIPTS[script]
    args = ["--smoke"] if script != "coord_check_time.py" else ["--widths", "64", "128", "256", "--seeds", "1",
                                                                 "--steps", "2"]
    proc = subprocess.run([sys.executable, script, *args], cwd=BENCH, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HPT_BENCH_RESULTS": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(tmp_path.glob(f"{prefix}-*.json"))
    assert len(files) == 1, sorted(p.name for p in tmp_path.iterdir())
    assert check(json.loads(files[0].read_text()))


@pytest.mark.slow
def test_the_horizon_basin_design_fits_weighted_basins_on_fresh_characters(tmp_path):
    """--basin: four fit points, each a basin over the fit seeds with its error, the fit weighted by those errors,
    the target's optimum by the same estimator with the three-point vertex kept; --corpus stdlib reads the
    standard library's source."""
    proc = subprocess.run([sys.executable, "axes_transfer.py", "--smoke", "--basin", "--axis", "horizon", "--corpus",
                           "stdlib"], cwd=BENCH, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HPT_BENCH_RESULTS": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("axes_transfer-horizon-smoke-*.json")
    result = json.loads(path.read_text())
    points = result["fit_points"]
    assert result["task"]["corpus"] == "stdlib" and len(points) == 4
    assert all(len(row) == 2 for p in points for row in p["seed_losses"])
    assert result["fit"]["se"] == [p["basin"]["se"] for p in points] and all(e > 0 for e in result["fit"]["se"])
    measured = result["measured"]
    assert measured["optimum_log2"] == measured["basin"]["log2"] and "vertex_log2" in measured
    assert result["error_octaves"] == pytest.approx(result["predicted_log2"] - measured["optimum_log2"])


def test_width_transfer_records_its_clip_threshold(tmp_path):
    """--grad-clip is accepted and written to the JSON, so a result says which clip threshold made it."""
    proc = subprocess.run([sys.executable, "width_transfer.py", "--smoke", "--schemes", "mup", "--grad-clip", "0.25"],
                          cwd=BENCH, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HPT_BENCH_RESULTS": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("width_transfer-smoke-*.json")
    result = json.loads(path.read_text())
    assert result["grad_clip"] == 0.25
    assert transfer_ok(result["results"], {"mup"}, 3)


def test_hidden_lr_ablation_scales_only_the_hidden_matrices():
    """The stand-in param_groups multiplies the LR of exactly the plan's hidden matrices, in SP (one merged
    group) and in mu-P (a group of their own), and leaves every other parameter's LR as it was."""
    sys.path.insert(0, str(BENCH))
    import hidden_lr_ablation

    import hptransfer as hpt
    from hptransfer.models import ModelSpec

    spec = ModelSpec("gpt", 64, 2, 32, 2, {"vocab_size": 40, "n_head": 4, "block_size": 16})
    for scheme in ("sp", "mup"):
        model = spec.parametrized(scheme, width=64, depth=2)
        plan = hpt.get_plan(model)
        names = {id(p): n for n, p in model.named_parameters()}

        def lrs(groups):
            return {names[id(p)]: g["lr"] for g in groups for p in g["params"]}

        plain = lrs(hpt.param_groups(model, lr=0.01, optimizer="adafactor"))
        scaled = lrs(hidden_lr_ablation.scaled_hidden_groups(3.0)(model, 0.01, optimizer="adafactor"))
        assert scaled.keys() == plain.keys()
        hidden = {n for n in plain if plan.params[n].role == "hidden"}
        assert hidden and hidden != set(plain)
        for name in plain:
            expected = plain[name] * (3.0 if name in hidden else 1.0)
            assert scaled[name] == expected, (scheme, name)
