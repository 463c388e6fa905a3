"""Helpers shared by the benchmark scripts: device naming, interleaved timing, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(os.environ.get("HPT_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def device_name(device: torch.device) -> str:
    """A short file-name-safe label of the machine, e.g. ``cpu-2c`` or ``cuda-nvidia-h100``."""
    if device.type == "cuda":
        return "cuda-" + torch.cuda.get_device_name(device).lower().replace(" ", "-")[:40]
    return f"cpu-{torch.get_num_threads()}t"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(candidates: dict[str, Callable[[], None]], repeats: int, steps: int,
                device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each candidate, measured in alternating order so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for rep in range(repeats):
        for name in (names if rep % 2 == 0 else names[::-1]):
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                candidates[name]()
            sync(device)
            times[name].append((time.perf_counter() - start) / steps)
    return times


def median_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


def write_result(name: str, device: torch.device, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, device=device_name(device), torch=torch.__version__, python=platform.python_version(),
                   date=time.strftime("%Y-%m-%d %H:%M:%S"))
    path = RESULTS / f"{name}-{device_name(device)}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


def transfer_optim_settings(name: str, adjust_lr_fn: str = "original"):
    """The optimizer settings of the transfer benchmarks: Lion with its paper's betas (0.9, 0.99), Muon with
    momentum 0.95, the trainer's defaults otherwise."""
    from hptransfer.pipeline.train import OptimSettings

    return OptimSettings(name=name, adjust_lr_fn=adjust_lr_fn,
                         betas=(0.9, 0.99) if name == "lion" else OptimSettings.betas,
                         momentum=0.95 if name == "muon" else OptimSettings.momentum)
