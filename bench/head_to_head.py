"""muTransfer head to head: (a) SP tuned directly at the target, (b) mu-P tuned directly at the target, (c) mu-P
tuned on a proxy >= 8x narrower and transferred - the LR together with the mu-P multipliers, by the pipeline's own
search (hptransfer.pipeline.tune, ``kind: search``: Optuna TPE on a trial ledger).

Each arm searches on seed 0 with its trial budget; the configuration each arm chose is then retrained at the target
on seeds 1..3 (fresh seeds: the search's own seed would flatter the winner), and its final validation loss is
reported as the mean with a 95% t-interval. (a) and (b) get the same budget; (c) gets ``--proxy-trials`` on the
proxy, whose compute is counted too. Compute is FLOPs measured by torch's FlopCounterMode on one training step
(forward and backward) times the steps, charged in full to every trial (diverged ones too). Then the mu-P model is
trained at the transferred values at every width from the proxy to the target (wider must be better).

    python bench/head_to_head.py --kind gpt        # reference GPT 32 -> 256 (about 40 min on 2 cores)
    python bench/head_to_head.py --kind resnet     # standard ResNet on digits, 16 -> 128
    python bench/head_to_head.py --kind llama      # transformers Llama through its adapter, 32 -> 256
    python bench/head_to_head.py --kind gpt_lion   # the GPT with Lion
    python bench/head_to_head.py --smoke           # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from hptransfer.data import load_data
from hptransfer.models import ModelSpec
from hptransfer.pipeline.train import HParams, OptimSettings, TrainSettings, train
from hptransfer.pipeline.tune import SweepSettings, run_sweep, with_values

from common import RESULTS, device_name, transfer_optim_settings, write_result

TRANSFORMER_SPACE = {"lr": [2.0**-12, 2.0**-3], "output": [1 / 8, 8.0], "input": [1 / 4, 16.0], "attn": [1 / 4, 4.0]}


@dataclass
class Kind:
    """One model kind of the comparison: the model, its data, the training run and the search space."""

    family: str
    data: dict[str, Any]
    options: dict[str, Any]
    target: int
    proxy: int
    steps: int
    batch: int
    optim: str
    space: dict[str, list[float]]
    seq_len: int = 64
    depth: int = 2
    grad_clip: float = 1.0
    eval_batches: int = 8
    betas: tuple[float, float] | None = None


KINDS: dict[str, Kind] = {
    "gpt": Kind("gpt", {"kind": "text"}, {"n_head": 4, "block_size": 64, "zero_init_readout": True,
                                           "zero_init_query": True}, 256, 32, 300, 16, "adamw", TRANSFORMER_SPACE),
    "llama": Kind("hf_llama", {"kind": "text"}, {"n_head": 4, "n_kv_head": 2, "block_size": 64}, 256, 32, 300, 16,
                  "adamw", TRANSFORMER_SPACE),
    "gpt_lion": Kind("gpt", {"kind": "text"}, {"n_head": 4, "block_size": 64, "zero_init_readout": True,
                                                "zero_init_query": True}, 256, 32, 300, 16, "lion",
                     {**TRANSFORMER_SPACE, "lr": [2.0**-16, 2.0**-6]}),
    "resnet": Kind("standard_resnet", {"kind": "digits", "val_fraction": 0.3}, {"d_in": 1, "d_out": 10}, 128, 16, 60,
                   32, "adam", {"lr": [2.0**-12, 2.0**-2], "output": [1 / 8, 8.0], "input": [1 / 4, 4.0]},
                   depth=1, grad_clip=0.0, eval_batches=8, betas=(0.9, 0.999)),
}


@dataclass
class Setup:
    kind: Kind
    data: Any
    spec: ModelSpec
    settings: TrainSettings
    optim: OptimSettings
    workdir: Path
    flops_per_step: dict[int, float] = field(default_factory=dict)

    def run(self, scheme: str, width: int, hp: HParams, seed: int) -> Any:
        return train(self.spec, scheme, self.data, hp, replace(self.settings, seed=seed), self.optim, width=width)

    def flops(self, width: int) -> float:
        """FLOPs of one training run at ``width`` (one step's forward and backward, counted, times the steps)."""
        if width not in self.flops_per_step:
            from torch.utils.flop_counter import FlopCounterMode

            model = self.spec.parametrized("mup", width=width, check=False)
            inputs, targets = self.data.batch("train", self.settings.batch_size, self.settings.seq_len,
                                              torch.Generator().manual_seed(0))
            counter = FlopCounterMode(display=False)
            with counter:
                logits = model(inputs)
                logits = getattr(logits, "logits", logits)
                torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
            self.flops_per_step[width] = float(counter.get_total_flops())
        return self.flops_per_step[width] * self.settings.steps


def setup(name: str, smoke: bool, workdir: Path) -> Setup:
    kind = KINDS[name]
    if smoke:
        kind = replace(kind, target=kind.proxy * 2 if name == "resnet" else 64, proxy=kind.proxy if name == "resnet"
                       else 8, steps=4, batch=4, seq_len=16, eval_batches=1)
    data = load_data(SimpleNamespace(path=None, seed=0, **{"val_fraction": 0.1, **kind.data}))
    options = dict(kind.options)
    if kind.data["kind"] == "text":
        options.update(data.model_options)
        options["block_size"] = kind.seq_len
    spec = ModelSpec(kind.family, kind.target, kind.depth, kind.proxy, kind.depth, options)
    settings = TrainSettings(steps=kind.steps, batch_size=kind.batch, seq_len=kind.seq_len, eval_every=0,
                             eval_batches=kind.eval_batches, grad_clip=kind.grad_clip)
    optim = transfer_optim_settings(kind.optim)
    if kind.betas is not None:
        optim = replace(optim, betas=kind.betas)
    return Setup(kind, data, spec, settings, optim, workdir)


def search_arm(setup: Setup, label: str, scheme: str, width: int, trials: int) -> dict[str, Any]:
    """One arm's search on seed 0 through the pipeline's own search; returns its chosen values and its trials."""
    sweep = SweepSettings(kind="search", n_trials=trials, space=setup.kind.space, study=label, heartbeat_s=0,
                          stale_after_s=600)
    storage = f"sqlite:///{(setup.workdir / f'{label}.db').resolve()}"
    log: list[dict[str, Any]] = []

    def objective(size: int, hp: HParams) -> Any:
        result = setup.run(scheme, size, hp, seed=0)
        log.append({"assignment": {"lr": hp.lr, **hp.multipliers}, "val_loss": result.val_loss,
                    "diverged": result.diverged, "seconds": result.seconds})
        print(f"  {label} #{len(log)}: log2 lr {math.log2(hp.lr):6.2f} "
              + " ".join(f"{k} {v:.3g}" for k, v in hp.multipliers.items())
              + f" -> {result.val_loss:.4f} ({result.seconds:.0f} s)", flush=True)
        return result

    started = time.perf_counter()
    optimum = run_sweep(objective, [width], HParams(), sweep, storage, {"bench": label})[0]
    chosen = {"lr": optimum.lr, **{k: v for k, v in optimum.params.items() if k != "lr"}}
    return {"scheme": scheme, "width": width, "trials": trials, "chosen": chosen, "search_loss": optimum.loss,
            "flops": trials * setup.flops(width), "seconds": time.perf_counter() - started, "log": log}


def interval(values: list[float]) -> dict[str, float]:
    """Mean and the half-width of its 95% t-interval (n - 1 degrees of freedom)."""
    t95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values) or len(values) < 2:
        return {"mean": statistics.fmean(finite) if finite else float("nan"), "half_width": float("nan")}
    return {"mean": statistics.fmean(values),
            "half_width": t95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))}


def retrain(setup: Setup, scheme: str, width: int, chosen: dict[str, float], seeds: list[int]) -> list[float]:
    hp = with_values(HParams(), chosen)
    return [setup.run(scheme, width, hp, seed).val_loss for seed in seeds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=sorted(KINDS), default="gpt")
    parser.add_argument("--trials", type=int, default=20, help="the search budget of each direct arm")
    parser.add_argument("--proxy-trials", type=int, default=40, help="the search budget on the proxy")
    parser.add_argument("--seeds", type=int, default=3, help="retraining seeds (1..seeds)")
    parser.add_argument("--target", type=int, help="override the kind's target width")
    parser.add_argument("--proxy", type=int, help="override the kind's proxy width")
    parser.add_argument("--steps", type=int, help="override the kind's training steps")
    parser.add_argument("--arms", nargs="+", default=["sp_direct", "mup_direct", "mutransfer"],
                        help="the arms to run; the others are taken from --reuse")
    parser.add_argument("--reuse", type=Path, help="a result file whose arms not in --arms are reused as they are")
    parser.add_argument("--space", nargs="+", help="add or replace search ranges, e.g. init=0.005,0.5")
    parser.add_argument("--tag", default="")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--plot", type=Path, help="only redraw the picture of a result file")
    parser.add_argument("--table", type=Path, nargs="+", help="only print the markdown table of result files")
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(path.read_text()) for path in args.table]))
        return
    if args.plot:
        plot(json.loads(args.plot.read_text()), args.plot.with_suffix(".png"))
        return
    if args.smoke:
        args.trials, args.proxy_trials, args.seeds = 3, 3, 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        s = setup(args.kind, args.smoke, Path(tmp))
        overrides = {k: v for k, v in (("target", args.target), ("proxy", args.proxy), ("steps", args.steps)) if v}
        if overrides:
            s.kind = replace(s.kind, **overrides)
            s.spec = replace(s.spec, width=s.kind.target, base_width=s.kind.proxy)
            s.settings = replace(s.settings, steps=s.kind.steps)
        kind = s.kind
        seeds = list(range(1, args.seeds + 1))
        print(f"{args.kind}: target width {kind.target}, proxy {kind.proxy}, {kind.steps} steps, {kind.optim}; "
              f"trials {args.trials} per direct arm, {args.proxy_trials} on the proxy; retrained on seeds {seeds}",
              flush=True)
        for extra in args.space or []:
            name, _, bounds = extra.partition("=")
            s.kind = replace(s.kind, space={**s.kind.space, name: [float(b) for b in bounds.split(",")]})
        reused = json.loads(args.reuse.read_text())["arms"] if args.reuse else {}
        plan = {"sp_direct": ("sp", kind.target, args.trials), "mup_direct": ("mup", kind.target, args.trials),
                "mutransfer": ("mup", kind.proxy, args.proxy_trials)}
        missing = [name for name in plan if name not in args.arms and name not in reused]
        if missing:
            parser.error(f"arms {missing} are neither run (--arms) nor reused (--reuse FILE)")
        arms = {name: (search_arm(s, name, *plan[name]) if name in args.arms else dict(reused[name], reused=True))
                for name in plan}
        for name, arm in arms.items():
            if arm.get("reused"):
                continue
            arm["target_losses"] = retrain(s, arm["scheme"], kind.target, arm["chosen"], seeds)
            arm["target"] = interval(arm["target_losses"])
            arm["retrain_flops"] = len(seeds) * s.flops(kind.target)
            print(f"{name}: chosen {arm['chosen']} -> target {arm['target']['mean']:.4f} "
                  f"+- {arm['target']['half_width']:.4f} (search {arm['search_loss']:.4f})", flush=True)
        direct_flops = arms["sp_direct"]["flops"]
        for arm in arms.values():
            arm["flops_vs_direct"] = arm["flops"] / direct_flops
        diff = [m - p for m, p in zip(arms["mutransfer"]["target_losses"], arms["sp_direct"]["target_losses"])]
        widths, width = [], kind.proxy
        while width < kind.target:
            widths.append(width)
            width *= 2
        ladder = {w: interval(retrain(s, "mup", w, arms["mutransfer"]["chosen"], seeds)) for w in widths}
        ladder[kind.target] = arms["mutransfer"]["target"]
        means = [ladder[w]["mean"] for w in sorted(ladder)]
    sp = arms["sp_direct"]["target"]
    verdict = {
        "mutransfer_minus_sp": interval(diff),
        "within_or_better": arms["mutransfer"]["target"]["mean"] <= sp["mean"] + sp["half_width"],
        "compute_ratio": arms["mutransfer"]["flops"] / direct_flops,
        "wider_is_better": all(b <= a for a, b in zip(means, means[1:])),
    }
    payload = {"kind": args.kind, "setting": asdict(s.kind), "reused_from": str(args.reuse) if args.reuse else None, "trials": args.trials, "proxy_trials": args.proxy_trials,
               "seeds": seeds, "arms": arms, "ladder": {str(w): v for w, v in sorted(ladder.items())},
               "verdict": verdict, "flops_per_step": {str(k): v for k, v in s.flops_per_step.items()},
               "seconds": time.perf_counter() - started}
    print(f"mutransfer - sp_direct: {verdict['mutransfer_minus_sp']['mean']:+.4f} "
          f"+- {verdict['mutransfer_minus_sp']['half_width']:.4f}; within SP's interval or better: "
          f"{verdict['within_or_better']}; compute {100 * verdict['compute_ratio']:.1f}% of SP's direct search; "
          f"wider is better: {verdict['wider_is_better']} ({', '.join(f'{m:.4f}' for m in means)})", flush=True)
    device = torch.device("cpu")
    name = f"head_to_head-{args.kind}" + ("-smoke" if args.smoke else "") + (f"-{args.tag}" if args.tag else "")
    path = write_result(name, device, payload)
    plot(payload, path.with_suffix(".png"))
    print(f"wrote {path} ({payload['seconds'] / 60:.1f} min)")


def table(payloads: list[dict[str, Any]]) -> str:
    """One row per model kind and arm: the chosen values, the retrained target loss and the tuning compute."""
    rows = ["| model kind (proxy -> target) | arm | trials | chosen log2 LR | other chosen values | search loss (seed 0) "
            "| target loss, seeds 1-3 (95% interval) | tuning FLOPs (vs SP direct) |", "|---|---|---|---|---|---|---|---|"]
    for payload in payloads:
        setting = payload["setting"]
        for name, arm in payload["arms"].items():
            chosen = arm["chosen"]
            others = ", ".join(f"{k} {v:.2f}" for k, v in chosen.items() if k != "lr")
            rows.append(f"| {payload['kind']} ({setting['proxy']} -> {setting['target']}) | {name} | {arm['trials']} | "
                        f"{math.log2(chosen['lr']):.2f} | {others} | {arm['search_loss']:.4f} | "
                        f"{arm['target']['mean']:.4f} +- {arm['target']['half_width']:.4f} | "
                        f"{arm['flops']:.2g} ({100 * arm['flops_vs_direct']:.1f}%) |")
    return "\n".join(rows)


def plot(payload: dict[str, Any], path: Path) -> None:
    """Left: each arm's target loss (seeds and mean) against its tuning FLOPs. Right: the mu-P width ladder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    colors = {"sp_direct": "C3", "mup_direct": "C0", "mutransfer": "C1"}
    direct = payload["arms"]["sp_direct"]["flops"]
    labels = []
    for x, (name, arm) in enumerate(payload["arms"].items()):
        left.plot([x] * len(arm["target_losses"]), arm["target_losses"], "o", color=colors[name], alpha=0.5)
        half = arm["target"]["half_width"]
        left.errorbar([x + 0.15], [arm["target"]["mean"]], yerr=[[half if math.isfinite(half) else 0]], fmt="s",
                      color=colors[name], capsize=4)
        labels.append(f"{name}\n{arm['target']['mean']:.4f}\n{arm['flops']:.2g} FLOPs ({100 * arm['flops'] / direct:.0f}%)")
    left.set_xticks(range(len(labels)), labels, fontsize=8)
    left.set_xlim(-0.5, len(labels) - 0.5)
    left.set_ylabel("target val loss (seeds; mean, 95% interval)")
    left.set_title(f"{payload['kind']}: target loss vs tuning compute", fontsize=10)
    widths = [int(w) for w in payload["ladder"]]
    means = [payload["ladder"][str(w)]["mean"] for w in widths]
    errs = [payload["ladder"][str(w)]["half_width"] for w in widths]
    right.errorbar(widths, means, yerr=[e if math.isfinite(e) else 0 for e in errs], fmt="-o", capsize=4, color="C1")
    right.set_xscale("log", base=2)
    right.set_xlabel("width")
    right.set_ylabel("validation loss at the transferred values")
    right.set_title("mu-P at the proxy's values: wider is better?", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
