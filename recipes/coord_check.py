"""Coordinate check of a reference model family: a verdict a CI job can gate on.

    python recipes/coord_check.py                                   # GPT, mu-P, widths 128..1024
    python recipes/coord_check.py scheme=sp                         # the negative control: FAIL, exit 1
    python recipes/coord_check.py model=resmlp axis=depth sizes=[2,4,8,16,32] scheme=completep
    python recipes/coord_check.py -m scheme=sp,mup                  # a multirun over schemes

Writes coord_check.png, coord_check.json and summary.md into the run dir. Exits 0 on PASS, 1 on FAIL and 2 on
INCONCLUSIVE (single runs only; in a multirun each job's verdict is in its own summary.md), 3 on a configuration
mistake (an unknown key, group or model, a bad value: one line naming it) and 4 on an internal error, so that a
CI gate can tell a typo from a failed check.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hptransfer import Thresholds, coord_check
from hptransfer.pipeline.cli import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_OK, entry, guarded
from hptransfer.pipeline.config import register_configs
from hptransfer.data import gaussian_mixture, text_batch
from hptransfer.pipeline.loggers import start_wandb
from hptransfer.models import ModelSpec
from hptransfer.models.registry import LANGUAGE_MODELS

log = logging.getLogger("coord_check")
register_configs()


def probe_data(cfg: DictConfig) -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
    """The probe batch and the model options it implies (vocabulary size for language models)."""
    if cfg.model.family in LANGUAGE_MODELS:
        inputs, targets, vocab = text_batch(cfg.batch_size, cfg.seq_len, seed=cfg.data_seed)
        return (inputs, targets), {"vocab_size": vocab}
    options = cfg.model.options
    points, labels = gaussian_mixture(max(cfg.batch_size, 8), options.get("d_in", 32), options.get("d_out", 10),
                                      seed=cfg.data_seed)
    return (points, labels), {}


def run(cfg: DictConfig, run_dir: Path) -> bool:
    data, extra = probe_data(cfg)
    spec = ModelSpec(cfg.model.family, cfg.model.width, cfg.model.depth, cfg.model.base_width,
                     cfg.model.base_depth, {**OmegaConf.to_container(cfg.model.options), **extra})
    multipliers = OmegaConf.to_container(cfg.scheme.multipliers)

    def build(size: int) -> torch.nn.Module:
        width, depth = (size, None) if cfg.axis == "width" else (None, size)
        return spec.parametrized(cfg.scheme.name, width=width, depth=depth, multipliers=multipliers,
                                 init=cfg.scheme.init)

    result = coord_check(build, list(cfg.sizes), axis=cfg.axis, data=data, optimizer=cfg.optimizer, lr=cfg.lr,
                         steps=cfg.steps, seeds=cfg.seeds, stat=cfg.stat, device=cfg.device, fast=cfg.fast,
                         thresholds=Thresholds(flat=cfg.flat))
    plot = result.plot(run_dir / "coord_check.png")
    result.to_json(run_dir / "coord_check.json")
    title = f"# Coordinate check: {cfg.model.family}, {cfg.scheme.name}, {cfg.axis} {list(cfg.sizes)}\n\n"
    (run_dir / "summary.md").write_text(title + result.summary() + f"\n\n![coordinate check]({plot.name})\n")
    print(result.summary())
    if cfg.logger.name == "wandb":
        import wandb

        with start_wandb(cfg.logger, "coord_check", OmegaConf.to_container(cfg, resolve=True), run_dir) as wb:
            table = wandb.Table(columns=["module", "step", "kind", "slope", "low", "high", "ok"],
                                data=[[s.module, s.step, s.kind, s.slope, s.low, s.high, s.ok] for s in result.slopes])
            wb.log({"coord_check/slopes": table, "coord_check/plot": wandb.Image(str(plot))})
            wb.summary["coord_check/ok"] = result.ok
            wb.summary["coord_check/verdict"] = result.verdict
            wb.summary["coord_check/failures"] = len(result.failures)
    return result.verdict


EXIT_CODES = {"PASS": EXIT_OK, "FAIL": EXIT_FAIL, "INCONCLUSIVE": EXIT_INCONCLUSIVE}  # what a CI job reads


@hydra.main(config_path="../conf", config_name="coord_check", version_base="1.3")
@guarded
def main(cfg: DictConfig) -> bool:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    verdict = run(cfg, run_dir)
    log.info("verdict: %s (files in %s)", verdict, run_dir)
    if verdict != "PASS" and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(EXIT_CODES[verdict])
    return verdict == "PASS"


if __name__ == "__main__":
    entry(main)
