"""Coordinate checks with a verdict: is a model really in mu-P / Depth-mu-P before you spend a sweep on it?

For each size (width or depth), seed and step, records on a fixed probe batch a statistic of chosen modules'
outputs and of their change since initialization (the feature update mu-P keeps order one); on the width
axis also each hidden layer's own update (W_t - W_0) x, every attention's logits (wherever the attention
runs: an AttentionProbe sees SDPA, flex and hand-written softmax(q @ k^T)) and each attention's
scale x head_dim. It then fits the slope of log2(stat) against log2(size). Flat means transfer-ready
(docs/rules.md, "Checks": |slope| <= 0.15); the bands of the other quantities, and why, are in Thresholds,
and the rules that turn slopes into PASS / FAIL / INCONCLUSIVE in CoordCheckResult.verdict.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as hnn
from ..errors import HptError
from ..probe.attention import AttentionRecorder
from ..probe.forward import run_probe
from ..optim import build_optimizer, optimizer_spec
from ..outputs import output_logits
from ..parametrize import get_plan, pending_first_forward, unwrap
from ..structure.shapes import as_globs, index_pattern, match_any
from ..validate import device as validate_device, number

log = logging.getLogger(__name__)

Batch = tuple[Any, torch.Tensor]
UNSTABLE_RISE = 0.05  # a probe loss 5% above the step before marks an unstable (oscillating) run ...
UNSTABLE_FLOOR = 0.02  # ... when the rise is also above this many nats (a near-zero loss jitters by 5%)
STATS: dict[str, Callable[[torch.Tensor], float]] = {
    "rms": lambda t: float(t.float().pow(2).mean().sqrt()),
    "l1": lambda t: float(t.float().abs().mean()),
    "std": lambda t: float(t.float().std()),
}


class CoordCheckError(HptError, ValueError):
    """Bad input to coord_check (sizes, build function, module globs, a loss that is NaN from the start)."""


@dataclass(frozen=True)
class Thresholds:
    """Pass rules (docs/rules.md, "Checks").

    Attributes:
        flat: max |slope| of a quantity mu-P keeps order one.
        init_logit_low: lowest slope allowed for the readout's logits, and for their change since init, at
            *every* step. At step 0, without zero init, they are a Gaussian process of variance ~1/width (TP5
            App. D.2), slope -1/2. After t steps they are W_0 h_t / m + dW h_t / m: the first part keeps
            shrinking like m^-1/2 (W_0 has the base's std, h_t moves by order one), the second is order one.
            Their sum, and its change since init (which holds W_0 dh / m), slide from slope -1/2 toward 0 -
            slowly at small learning rates (measured on HF Llama, widths 64..512, Adam 1e-3: -0.37, -0.25,
            -0.18 at steps 1..3). Growth is what a broken readout does (no 1/m multiplier: about +0.5 at init
            and +1 after updates), so the upper bound stays ``flat``.
        attn_logit_low: lowest slope allowed for attention logits (None: no lower bound). At init they are
            a random q.k of variance ~1/d (slope -1/2), or exactly zero with a zero-init query; their update
            is a correlated part (order one) plus cross terms between the tokens of the batch, which are
            random and shrink like d^-1/2, so it reaches its limit from below only once the head dim is large
            next to the tokens seen (measured on the reference GPT with 8 tokens: local slopes +0.22, -0.68,
            -0.40, -0.03 between widths 128..2048; under SGD steeper still). Any shrinking is therefore
            consistent with mu-P at finite width, and the scale itself is judged exactly by the "scale" rows
            (``scale * head_dim`` must not depend on width). SP-style 1/sqrt(d) attention makes both grow.
        own_low: lowest slope allowed for a hidden layer's own update (W_t - W_0) x, which mu-P keeps order
            one (TP5's feature-learning condition). The faults it exists for move it by a whole power of width:
            an Adam LR not divided by m_fanin makes it grow like width^+1, a hidden LR scaled twice shrinks it
            like width^-1 (under SGD too, where the input layer's large LR keeps every activation flat and
            hides that fault from them). At small widths correct ones shrink by up to width^-1/2: Adam's
            sign-like first steps of a gradient whose rank (tokens) is not small next to the width; and, under
            SGD, the layers that feed only attention logits (queries, keys), whose gradient passes through
            dL/dlogit = dout . v, an inner product of two vectors independent at init (~ width^-1/2 until the
            value and output weights have moved). So the band is [-1/2 - flat, flat].
        shrink_limit: in the token-limited regime (smallest width < 4 x tokens x steps) a correct update can
            shrink like width^-1/2 (the random cross terms of the previous entry, and Adam's sign-like updates
            of a matrix whose rank, tokens x steps, is not small next to its width). A shrinking failure whose
            seed band reaches up to this slope is then inconclusive; one steeper than it (a hidden LR scaled
            twice shrinks the layers' own updates like width^-1) still fails.
    """

    flat: float = 0.15
    init_logit_low: float = -0.5 - 0.15
    attn_logit_low: float | None = None
    own_low: float = -0.5 - 0.15
    shrink_limit: float = -0.5 - 0.15
    # Depth axis, step 0: the stream is the input part plus L branches of size m_L^-alpha each, so with
    # alpha > 1/2 it may shrink like L^(1/2 - alpha) until the input part dominates (CompleteP accepts
    # this; stability at init needs alpha >= 1/2, TP6). The band's low end becomes (1/2 - alpha) - flat.


@dataclass
class Slope:
    """Slope of log2(stat) vs log2(size) for one (module, step, kind): mean over seeds, and the band
    mean +- 2 standard errors over seeds (zero width with one seed)."""

    module: str
    step: int
    kind: str  # "out" (the activation), "update" (its change since step 0), "own" ((W_t - W_0) x of a hidden
    #            layer: the change its own weights make, TP5's feature-learning desideratum), "scale" (attention)
    slope: float
    low: float
    high: float
    allowed: tuple[float, float]
    judged: bool = True  # False for steps after a run became unstable (see CoordCheckResult.last_judged_step)

    @property
    def ok(self) -> bool:
        """Fails only when the whole seed band (mean +- 2 standard errors) is outside the allowed interval."""
        return self.high >= self.allowed[0] and self.low <= self.allowed[1]

    @property
    def excess(self) -> float:
        """How far the seed band lies outside the allowed interval (0 when they overlap)."""
        return max(self.allowed[0] - self.high, self.low - self.allowed[1], 0.0)


@dataclass
class CoordCheckResult:
    """Outcome of coord_check: ``ok`` (bool verdict), ``slopes``, ``records`` (rows) and reporting helpers."""

    axis: str
    sizes: list[int]
    steps: int
    seeds: int
    stat: str
    thresholds: Thresholds
    records: list[dict[str, Any]] = field(default_factory=list)
    slopes: list[Slope] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    depth_alpha: float | None = None
    logit_modules: set[str] = field(default_factory=set)
    probe_losses: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0  # targets per batch

    def unstable_runs(self, rise: float = UNSTABLE_RISE) -> list[tuple[int, int, int]]:
        """(size, seed, step) where the probe batch's loss first rose by more than ``rise`` over the step before."""
        by_run: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
        for r in self.probe_losses:
            by_run[(r["size"], r["seed"])][r["step"]] = r["value"]
        found = []
        for (size, seed), losses in sorted(by_run.items()):
            for step in sorted(losses)[1:]:
                if losses[step] > losses[step - 1] * (1 + rise) and losses[step] - losses[step - 1] > UNSTABLE_FLOOR:
                    found.append((size, seed, step))
                    break
        return found

    @property
    def last_judged_step(self) -> int:
        """The last step the verdict looks at: the step before any run's probe loss first rose.

        A rising loss means the learning rate is past that model's stable range (usually the smallest
        width's, which tolerates the least); from then on its activations oscillate, and a correct
        parametrization no longer has flat curves (the smallest models' activations blow up, so they seem to
        shrink with width), while a fault's signature, when it has one, is already there in the steps before.
        """
        unstable = self.unstable_runs()
        return min(step for _, _, step in unstable) - 1 if unstable else self.steps

    @property
    def token_limited(self) -> bool:
        """Widths not much larger than the tokens x steps the updates are built from (see Thresholds)."""
        return self.axis == "width" and min(self.sizes) < 4 * self.tokens * max(self.last_judged_step, 1)

    def _diagnosis(self) -> tuple[str, str]:
        """(verdict, reason): the reasoning of ``verdict`` in one place."""
        span = max(self.sizes) / min(self.sizes)
        if len(self.sizes) < 4 or span < 8:
            seen = "every slope is in its band" if self.ok else f"{len(self.failures)} slope(s) out of band"
            return "INCONCLUSIVE", (f"{len(self.sizes)} {self.axis}s over {span:g}x are too few to tell a trend from "
                                    f"noise ({seen}); use at least 4 sizes over at least 8x")
        growing = [f for f in self.failures if f.low > f.allowed[1]]
        shrinking = [f for f in self.failures if f.high < f.allowed[0]]
        steep = [f for f in shrinking if f.high < self.thresholds.shrink_limit]
        if growing or steep:
            return "FAIL", ""
        if shrinking and self.token_limited:
            worst = shrinking[0]
            return "INCONCLUSIVE", (
                f"every failing slope shrinks, none faster than width^{self.thresholds.shrink_limit + self.thresholds.flat:g}"
                f" (worst: {worst.module}, step {worst.step}, {worst.kind}, {worst.slope:+.2f}), and the smallest "
                f"width ({min(self.sizes)}) is not much larger than tokens x steps ({self.tokens} x "
                f"{max(self.last_judged_step, 1)}), where correct updates shrink that much too. Rerun with larger "
                "widths or fewer tokens per batch.")
        if shrinking:
            return "FAIL", ""
        if self.last_judged_step < 1:
            size, seed, step = self.unstable_runs()[0]
            return "INCONCLUSIVE", (f"the probe loss rose at step {step} for {self.axis} {size} (seed {seed}), so "
                                    "only the initialization could be judged, and it is in order; the learning "
                                    "rate is past the stable range of the models. Rerun with a smaller lr.")
        return "PASS", ""

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or INCONCLUSIVE (with ``reason``); the rules, in order:

        - fewer than 4 sizes or less than 8x between them: INCONCLUSIVE, whatever the slopes say;
        - only steps up to ``last_judged_step`` count (before any run turned unstable);
        - a judged slope that grows past its band: FAIL. Every fault that breaks mu-P but one makes something
          grow (SP, a missing readout multiplier, unscaled hidden LR or init, 1/sqrt(d) attention);
        - a judged slope that shrinks faster than ``shrink_limit``: FAIL (a hidden LR scaled twice shrinks the
          layers' own updates like width^-1);
        - milder shrinking: FAIL, or INCONCLUSIVE when the widths are token-limited (see Thresholds);
        - no failure but no step after init judged: INCONCLUSIVE; else PASS.
        """
        return self._diagnosis()[0]

    @property
    def reason(self) -> str:
        """Why the verdict is inconclusive ("" otherwise)."""
        return self._diagnosis()[1]

    def likely_causes(self) -> list[str]:
        """The rules most likely at fault, read off the failing slopes (empty when passing), worst first."""
        causes: dict[str, list[str]] = {}
        for slope in self.failures:
            growing = slope.slope > 0
            if self.axis == "depth":
                cause = ("grows with depth: the branch multiplier (m_L^-alpha) or the in-block depth LR factor is "
                         "missing" if growing else "shrinks with depth: the branches are scaled too hard, or the "
                         "input part is too small to carry the residual stream (raise multipliers['input'])")
            elif slope.kind == "scale":
                cause = ("grows with width: the attention scale stays 1/sqrt(d) instead of mu-P's 1/d (attention not "
                         "reached, or base_head_dim wrong)" if growing else
                         "shrinks with width: the attention scale is applied twice")
            elif slope.module.endswith("(attn logits)"):
                cause = ("grows with width: the attention logits keep 1/sqrt(d) instead of mu-P's 1/d (attention not "
                         "reached, or base_head_dim wrong)")
            elif slope.module in self.logit_modules:
                cause = ("grows with width: the readout's 1/m_N multiplier is missing (or the readout was not found: "
                         "name it with readout=)" if growing else
                         "shrinks faster than width^-1/2: the readout multiplier is applied twice")
            elif slope.kind == "own":
                cause = ("grows with width: the hidden weights' own updates are too large (LR not scaled by mu-P: for "
                         "Adam divide by m_fanin)" if growing else
                         "shrinks with width: the hidden weights' own updates vanish: their LR is scaled too much "
                         "(e.g. twice)")
            elif growing:
                cause = ("grows with width: hidden weights are not in mu-P (Adam LR not divided by m_fanin, or init "
                         "not divided by sqrt(m_fanin))")
            else:
                cause = ("shrinks with width: the hidden-weight LR is scaled too much (e.g. twice), or the input "
                         "layers' LR is not scaled up (SGD)")
            modules = causes.setdefault(cause, [])
            if slope.module not in modules:
                modules.append(slope.module)
        return [f"{', '.join(m[:3])}{' ...' if len(m) > 3 else ''} {cause}" for cause, m in causes.items()]

    @property
    def ok(self) -> bool:
        """No judged slope outside its band (the verdict adds the evidence rules: see ``verdict``)."""
        return bool(self.slopes) and not self.failures

    @property
    def failures(self) -> list[Slope]:
        """Judged slopes outside their band, worst first."""
        last = self.last_judged_step
        return sorted((s for s in self.slopes if not s.ok and s.step <= last), key=lambda s: -s.excess)

    def slope(self, module: str, step: int, kind: str = "out") -> Slope:
        for s in self.slopes:
            if (s.module, s.step, s.kind) == (module, step, kind):
                return s
        raise KeyError((module, step, kind))

    def summary(self, worst: int = 8) -> str:
        """A short table: the verdict, then the worst offenders (or the steepest slopes when passing)."""
        verdict = self.verdict
        rows = self.failures[:worst] if not self.ok else sorted(self.slopes, key=lambda s: -abs(s.slope))[:worst]
        lines = [f"coord check ({self.axis}, sizes {self.sizes}, {self.seeds} seeds, {self.steps} steps, "
                 f"stat {self.stat}): {verdict} - {len(self.failures)} of {len(self.slopes)} slopes outside "
                 f"their band",
                 "| module | step | kind | slope | seed band | allowed | ok |", "|---|---|---|---|---|---|---|"]
        for note in self.notes if not self.ok else []:
            lines.insert(1, f"note: {note}")
        for cause in reversed(self.likely_causes()[:4] if verdict == "FAIL" else []):
            lines.insert(1, f"likely cause: {cause}")
        if self.last_judged_step < self.steps:
            size, seed, step = self.unstable_runs()[0]
            lines.insert(1, f"judged: steps 0..{max(self.last_judged_step, 0)} only; the probe loss rose at step {step} "
                            f"for {self.axis} {size} (seed {seed}), past the stable range of that model")
        if self.reason:
            lines.insert(1, f"inconclusive: {self.reason}")
        for s in rows:
            lines.append(f"| {s.module} | {s.step} | {s.kind} | {s.slope:+.3f} | [{s.low:+.3f}, {s.high:+.3f}] | "
                         f"[{s.allowed[0]:+.2f}, {s.allowed[1]:+.2f}] | {'yes' if s.ok else 'NO'} |")
        return "\n".join(lines)

    def to_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        payload = {"axis": self.axis, "sizes": self.sizes, "steps": self.steps, "seeds": self.seeds,
                   "stat": self.stat, "ok": self.ok, "verdict": self.verdict, "reason": self.reason,
                   "likely_causes": self.likely_causes(), "probe_losses": self.probe_losses, "thresholds": asdict(self.thresholds),
                   "last_judged_step": self.last_judged_step, "tokens": self.tokens,
                   "slopes": [dict(asdict(s), allowed=[_finite(a) for a in s.allowed], ok=s.ok)
                              for s in self.slopes], "records": self.records}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(path)
        return path

    def plot(self, path: str | os.PathLike, max_modules: int = 12) -> Path:
        """Log-log panels of stat vs size, one per step; top row the activations, bottom row their updates."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        table: dict[tuple[str, str, int, int], list[float]] = defaultdict(list)
        for r in self.records:
            table[(r["kind"], r["module"], r["step"], r["size"])].append(r["value"])
        failing = {s.module for s in self.failures}
        modules = sorted({r["module"] for r in self.records}, key=lambda m: (m not in failing, m))[:max_modules]
        steps = list(range(self.steps + 1))
        fig, axes = plt.subplots(2, len(steps), figsize=(3.2 * len(steps), 6.0), squeeze=False, sharex=True)
        colors = plt.cm.tab20(np.linspace(0, 1, max(len(modules), 2)))
        for row, kind in enumerate(("out", "update")):
            for col, step in enumerate(steps):
                ax = axes[row][col]
                for color, module in zip(colors, modules):
                    xs, mean, low, high = [], [], [], []
                    for size in self.sizes:
                        vals = [v for v in table.get((kind, module, step, size), []) if v > 0]
                        if vals:
                            xs.append(size)
                            mean.append(float(np.mean(vals)))
                            low.append(min(vals))
                            high.append(max(vals))
                    if len(xs) >= 2:
                        style = "--" if module in failing else "-"
                        ax.plot(xs, mean, style, color=color, marker="o", ms=3, label=module)
                        ax.fill_between(xs, low, high, color=color, alpha=0.15)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log", base=2)
                if not ax.lines:  # an empty panel says why, and shows no scale
                    ax.set_yticks([])
                    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
                if kind == "update" and step == 0:
                    ax.text(0.5, 0.5, "no change at init", ha="center", va="center", transform=ax.transAxes,
                            color="gray")
                elif not ax.lines:
                    ax.text(0.5, 0.5, "every value is 0 here:\nnothing has changed yet\n(e.g. a zero-init readout)",
                            ha="center", va="center", transform=ax.transAxes, color="gray", fontsize=8)
                else:
                    _readable_log_axis(ax)
                ax.set_title(f"{'activation' if kind == 'out' else 'change since init'}, step {step}", fontsize=9)
                if row == 1:
                    ax.set_xlabel(self.axis)
            axes[0][0].set_ylabel(f"{self.stat}")
            axes[1][0].set_ylabel(f"{self.stat} of x_t - x_0")
        handles, labels = axes[0][-1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7)
        fig.suptitle(f"coordinate check vs {self.axis}: {self.verdict} "
                     f"(dashed: outside the band)", fontsize=11)
        fig.tight_layout(rect=(0, 0.08, 1, 0.95))
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


MIN_SPAN = 4.0  # a panel's y axis spans at least this factor (two octaves): a flat line looks flat


def _readable_log_axis(ax: Any) -> None:
    """Widen a log2 y axis to at least MIN_SPAN around its data (so that a 10% wiggle is drawn as one, not edge to
    edge) and label its ticks in plain numbers; a span of two octaves holds at least two powers of 2."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    values = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.lines])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size:
        low, high = float(values.min()), float(values.max())
        if high / low < MIN_SPAN:
            center = math.sqrt(low * high)
            ax.set_ylim(center / math.sqrt(MIN_SPAN), center * math.sqrt(MIN_SPAN))
    ax.yaxis.set_major_locator(LogLocator(base=2))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _finite(value: float) -> float | None:
    """JSON has no infinity: an open end of a band is written as null."""
    return value if math.isfinite(value) else None


# ---- what to record ----------------------------------------------------------------------------------
def _default_modules(root: nn.Module, axis: str) -> dict[str, str]:
    """key -> what to record ("out", "readout_in", "own") for the default module set (attention logits come
    from the probe, wherever attention runs).

    Width: input layers, residual branches and blocks, attention logits, the readout's input and output
    (and every width-sized layer in a model without residual blocks). Depth: what docs/rules.md and CompleteP
    Fig. 7 require to be flat, the final residual stream (output of the last block) and the readout's input
    and output; quantities inside a branch scale with depth by design (TP6, CompleteP), and per-block
    averages only settle as the depth grows, so neither decides the depth verdict (record them with
    ``modules=``).
    """
    plan = get_plan(root)
    chosen: dict[str, str] = {}
    modules = dict(root.named_modules())
    if plan is not None:
        blocks = [b for b in dict.fromkeys(r.block for r in plan.params.values() if r.block)]
        native_residuals = [n for n, m in modules.items() if isinstance(m, hnn.Residual)]
        for rec in plan.modules:
            if rec.kind == "input" and axis == "width":
                chosen[rec.name] = "out"
            if rec.kind == "branch" and axis == "width":
                chosen[rec.name] = "out"
            if rec.kind == "readout":
                chosen[rec.name] = "out"
                chosen[rec.name + ":in"] = "readout_in"
        streams = native_residuals or [b for b in blocks if b in modules and b != ""]
        if axis == "width":
            for block in streams:
                chosen.setdefault(block, "out")
        if streams:
            chosen[streams[-1] + ":last"] = "out"
        if not plan.n_branches and axis == "width":  # no residual structure: every width-sized layer
            for rec in plan.params.values():
                owner = rec.name.rpartition(".")[0]
                if rec.role in ("input", "hidden") and owner:
                    chosen.setdefault(owner, "out")
    if axis == "width" and plan is not None:
        for rec in plan.params.values():
            owner, _, attr = rec.name.rpartition(".")
            if rec.role == "hidden" and attr == "weight" and _own_update_form(modules.get(owner)) is not None:
                chosen[owner + ":own"] = "own"
    return chosen


def _own_update_form(module: nn.Module | None) -> str | None:
    """How a layer applies its weight: "linear" (x W^T, nn.Linear) or "conv1d" (x W, transformers' Conv1D)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        return "conv1d"
    return None


class _Recorder:
    """Forward hooks that capture the chosen tensors during one probe forward."""

    def __init__(self, root: nn.Module, chosen: dict[str, str], initial_weights: dict[str, torch.Tensor]) -> None:
        self.captured: dict[str, torch.Tensor] = {}
        modules = dict(root.named_modules())
        self.handles = []
        for key, what in chosen.items():
            module = modules[key.split(":")[0]]
            if what == "readout_in":  # before hptransfer's own input multiplier: record what the layer gets
                self.handles.append(module.register_forward_pre_hook(self._pre(key), prepend=True))
            elif what == "own":
                if key in initial_weights:
                    self.handles.append(module.register_forward_hook(self._own(key, initial_weights[key])))
            else:
                self.handles.append(module.register_forward_hook(self._out(key)))

    def _out(self, key: str):  # type: ignore[no-untyped-def]
        def hook(module, args, output):  # type: ignore[no-untyped-def]
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(tensor, torch.Tensor):
                self.captured[key] = tensor.detach()
        return hook

    def _pre(self, key: str):  # type: ignore[no-untyped-def]
        def hook(module, args):  # type: ignore[no-untyped-def]
            self.captured[key] = args[0].detach()
        return hook

    def _own(self, key: str, initial: torch.Tensor):  # type: ignore[no-untyped-def]
        def hook(module, args, output):  # type: ignore[no-untyped-def]
            delta = module.weight.detach() - initial
            x = args[0].detach().to(delta.dtype)
            self.captured[key] = F.linear(x, delta) if _own_update_form(module) == "linear" else x @ delta
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _label(key: str) -> str:
    name, _, what = key.partition(":")
    return {"in": f"{name} (input)", "logits": f"{name} (attn logits)", "scale": f"{name} (attn scale x head dim)",
            "last": "residual stream (last block)"}.get(what, name)


# ---- the check ---------------------------------------------------------------------------------------
def _fixed_batches(data: Batch | Iterable[Batch], steps: int) -> list[Batch]:
    """The ``steps`` batches every model trains on, read once: every size and seed sees the same data (a
    generator passed as ``data`` would otherwise hand each model different batches, and a different probe)."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        return [data] * max(steps, 1)
    batches = list(itertools.islice(iter(data), max(steps, 1)))
    if not batches:
        raise CoordCheckError("data is an empty iterable; pass one (inputs, targets) batch or an iterable of them")
    if len(batches) < steps:
        raise CoordCheckError(f"data ran out of batches: it has {len(batches)} but the check takes {steps} steps; "
                              "pass more batches or fewer steps")
    return batches


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def default_loss(output: Any, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dimension (works for (B, C) and (B, T, C) logits, and ModelOutputs)."""
    logits = output_logits(output)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def coord_check(
    build: Callable[[int], nn.Module],
    sizes: Sequence[int],
    *,
    axis: Literal["width", "depth"] = "width",
    data: Batch | Iterable[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    optimizer: str = "adamw",
    lr: float = 1e-2,
    steps: int = 5,
    seeds: int = 3,
    stat: Literal["rms", "l1", "std"] = "rms",
    modules: str | Sequence[str] | None = None,
    device: str | torch.device | None = None,
    thresholds: Thresholds = Thresholds(),
    fast: bool = False,
    progress: bool | None = None,
    group_kwargs: dict[str, Any] | None = None,
) -> CoordCheckResult:
    """Run a coordinate check across ``sizes`` and return a result with a numeric verdict.

    Args:
        build: ``build(size)`` returns a ready (parametrized) model of that width or depth; called under
            ``torch.manual_seed(seed)`` for each seed.
        sizes: at least 3 distinct widths or depths (mu-P checks want >= 4 over >= 8x).
        axis: "width" (modules compared by name) or "depth" (blocks pooled by index pattern).
        data: one ``(inputs, targets)`` batch, reused every step, or an iterable with a new batch per step.
            The first batch is the probe on which activations are recorded at every step.
        loss_fn: ``loss_fn(model(inputs), targets)``; default cross-entropy over the last dim.
        optimizer, lr: ``hptransfer.build_optimizer(model, optimizer, lr)``: adam, adamw, sgd, adafactor, lion,
            muon (the Muon + AdamW hybrid, one base LR), or one you registered.
        steps, seeds: training steps after init, and seeds per size. ``fast`` caps them at 3 and 2.
        stat: "rms", "l1" (mup's mean |x|) or "std".
        modules: globs of modules to record instead of the defaults (residual blocks and branches, input
            layers, attention logits of hptransfer.nn.SelfAttention, the readout's input and output).
        device: default CUDA when available, else CPU.
        thresholds: the pass rules.
        progress: show a progress bar (default: only on a terminal).
        group_kwargs: extra keyword arguments for param_groups (e.g. weight_decay, eps).

    Returns:
        CoordCheckResult with .ok, .slopes, .records, .summary(), .plot(path), .to_json(path).
    """
    from tqdm.auto import tqdm

    if not callable(build) or isinstance(build, torch.nn.Module):
        raise CoordCheckError(f"build={type(build).__name__}: give a function build(size) -> parametrized model, not "
                              "a model (e.g. build=lambda width: make_model(width))")
    if isinstance(sizes, (str, bytes)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise CoordCheckError(f"sizes={sizes!r}: give a list of integer widths (or depths), e.g. [64, 128, 256, 512]")
    if data is None or isinstance(data, (str, bytes, torch.Tensor)) or not hasattr(data, "__iter__"):
        raise CoordCheckError(f"data={type(data).__name__}: give one (inputs, targets) batch, or an iterable of "
                              "them (one per step)")
    distinct = sorted(set(int(s) for s in sizes))
    if len(distinct) < 3:
        raise CoordCheckError(f"sizes={list(sizes)} has {len(distinct)} distinct value(s); a slope needs at least "
                              "3 (use >= 4 sizes over >= 8x, e.g. [64, 128, 256, 512])")
    if min(distinct) <= 0:
        raise CoordCheckError(f"sizes must be positive, got {list(sizes)}")
    if axis not in ("width", "depth"):
        raise CoordCheckError(f"axis={axis!r}: choose 'width' or 'depth'")
    if stat not in STATS:
        raise CoordCheckError(f"stat={stat!r}: choose one of {sorted(STATS)}")
    optimizer_spec(optimizer)  # an unknown name fails here, before any model is built
    number("lr", lr, above=0, error=CoordCheckError)
    number("steps", steps, minimum=1, integer=True, error=CoordCheckError,
           fix="the check compares the model after 1..steps optimizer steps")
    number("seeds", seeds, minimum=1, integer=True, error=CoordCheckError)
    if fast:
        steps, seeds = min(steps, 3), min(seeds, 2)
    device = validate_device("device", device, error=CoordCheckError) or torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    loss_fn = loss_fn or default_loss
    statistic = STATS[stat]
    result = CoordCheckResult(axis, distinct, steps, seeds, stat, thresholds)
    readouts: set[str] = set()
    tokens = 0
    signatures: dict[int, tuple] = {}
    bar = tqdm(total=len(distinct) * seeds, desc=f"coord check ({axis})", disable=not progress if progress
               is not None else None, leave=False)
    fixed = _fixed_batches(data, steps)
    cache: dict[str, dict[str, str]] = {}

    def largest_modules() -> dict[str, str]:
        if "largest" not in cache:
            cache["largest"] = _modules_of_largest(build, distinct, axis)
        return cache["largest"]

    for seed in range(seeds):
        for size in distinct:
            torch.manual_seed(seed)
            model = build(size)
            if not isinstance(model, torch.nn.Module):
                raise CoordCheckError(f"build({size}) returned {type(model).__name__}, not an nn.Module")
            if any(p.is_meta for p in model.parameters()):
                raise CoordCheckError(f"build({size}) returned a model on the meta device: the check trains it, so "
                                      "build it on a real device (a meta model is only a base for parametrize)")
            model = model.to(device)
            root = unwrap(model)
            signatures[size] = tuple((n, tuple(p.shape)) for n, p in root.named_parameters())
            plan = get_plan(root)
            readouts |= {m.name for m in plan.modules if m.kind == "readout"} if plan else set()
            result.depth_alpha = plan.depth_alpha if plan else None
            for note in plan.notes if plan else []:
                if note not in result.notes:
                    result.notes.append(note)
            chosen = _choose_modules(root, modules, axis, largest_modules)
            opt = build_optimizer(model, optimizer, lr=lr, group_kwargs=group_kwargs)
            batches = iter(fixed)
            probe_inputs, probe_targets = first = next(batches)
            tokens = int(probe_targets.numel())
            probe_inputs = _to(probe_inputs, device)
            if pending_first_forward(root):  # its attention check runs extra forwards: keep them out of the probe
                with torch.no_grad():
                    model(probe_inputs)
            modules_now = dict(root.named_modules())
            weights0 = {key: modules_now[key.split(":")[0]].weight.detach().clone()
                        for key, what in chosen.items() if what == "own"}
            attention = axis == "width" and modules is None
            initial: dict[str, torch.Tensor] = {}
            for step in range(steps + 1):
                captured, output, calls = _probe(model, root, chosen, probe_inputs, weights0, attention)
                if step == 0:
                    result.records += _scale_records(calls, seed, size)
                    attention = bool(calls)  # none at init: none later, so skip the probe's overhead
                with torch.no_grad():
                    probe_loss = float(loss_fn(output, _to(probe_targets, device)))
                result.probe_losses.append(dict(seed=seed, size=size, step=step, value=probe_loss))
                for key, tensor in captured.items():
                    name = _pool(key, axis)
                    if key.endswith(":own"):  # already a change since init
                        if step > 0:
                            result.records.append(dict(seed=seed, size=size, step=step, module=name, kind="own",
                                                       value=statistic(tensor)))
                        continue
                    if step == 0:
                        initial[key] = tensor
                    result.records.append(dict(seed=seed, size=size, step=step, module=name, kind="out",
                                               value=statistic(tensor)))
                    if step > 0 and key in initial and initial[key].shape == tensor.shape:
                        result.records.append(dict(seed=seed, size=size, step=step, module=name, kind="update",
                                                   value=statistic(tensor - initial[key])))
                if step == steps:
                    break
                inputs, targets = first if step == 0 else next(batches)
                loss = loss_fn(model(_to(inputs, device)), _to(targets, device))
                if not torch.isfinite(loss):
                    bar.close()
                    where = "at step 0 (before any update)" if step == 0 else f"after {step} step(s)"
                    hint = ("check the data and loss_fn, not the learning rate" if step == 0 else
                            "the learning rate may be too large for this check; try a smaller lr")
                    raise CoordCheckError(f"loss is {float(loss.detach())} {where} for {axis} {size}, seed {seed}: {hint}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            del model, root, opt, weights0, initial, modules_now
            if device.type == "cuda":  # a full collection costs ~0.1 s: only where cached memory must go back
                gc.collect()
                torch.cuda.empty_cache()
            bar.update(1)
    bar.close()
    if len(set(signatures.values())) == 1:
        raise CoordCheckError(f"build(size) returned models with identical parameter shapes for sizes {distinct}; "
                              f"build must construct a model of the given {axis}")
    _pool_depth(result, axis)
    result.slopes = _fit_slopes(result, readouts)
    result.logit_modules = {_label(k) for k in readouts}
    result.tokens = tokens
    shrinking = [f for f in result.failures if f.module == _label(":last") and f.slope < 0]
    if axis == "depth" and shrinking and (result.depth_alpha or 0) > 0.5:
        result.notes.append(
            f"the residual stream shrinks with depth (slope {shrinking[0].slope:+.2f} at step {shrinking[0].step}): "
            f"with branches scaled by L^-{result.depth_alpha:g} the input part has to carry the stream, and it is "
            "too small next to the branches. Raise the input multiplier, parametrize(..., multipliers={'input': "
            "...}), until the embedding's rms is order one (e.g. 20 for an N(0, 0.02) embedding); the plan's "
            "notes give the value for adapter families.")
    if axis == "width" and min(distinct) < 4 * tokens * steps:
        result.notes.append(
            f"the smallest width ({min(distinct)}) is not much larger than tokens per batch x steps "
            f"({tokens} x {steps}); mu-P's predictions are for width >> that, and quantities with token-specific "
            "gradients (attention logits, Adam's updates) shrink with width until then. Use fewer tokens or "
            "larger widths.")
    return result


def _modules_of_largest(build: Callable[[int], nn.Module], sizes: list[int], axis: str) -> dict[str, str]:
    """The default modules of the largest model: at the base's own width a plan cannot tell the readout or
    the input layers from their shapes, but module names are the same at every width."""
    if axis != "width":
        return {}
    state = torch.random.get_rng_state()
    try:
        largest = build(max(sizes))
    finally:
        torch.random.set_rng_state(state)
    return _default_modules(unwrap(largest), axis)


def _choose_modules(root: nn.Module, globs: str | Sequence[str] | None, axis: str,
                    fallback: Callable[[], dict[str, str]] | None = None) -> dict[str, str]:
    if globs is None:
        chosen = _default_modules(root, axis)
        names = dict(root.named_modules())
        if fallback is not None and axis == "width" and not any(v == "readout_in" for v in chosen.values()):
            chosen = {k: v for k, v in fallback().items() if k.split(":")[0] in names} or chosen
        if not chosen:
            raise CoordCheckError("found nothing to record: the model has no plan (call hptransfer.parametrize in "
                                  "build) and no hptransfer.nn attention; pass modules=[...] globs")
        return chosen
    names = [n for n, _ in root.named_modules() if n]
    chosen = {}
    for glob in as_globs(globs):
        hits = [n for n in names if match_any(n, [glob])]
        if not hits:
            raise CoordCheckError(f"modules glob {glob!r} matched no module; names look like {', '.join(names[:8])}")
        chosen.update({n: "out" for n in hits})
    return chosen


@torch.no_grad()
def _probe(model: nn.Module, root: nn.Module, chosen: dict[str, str], inputs: Any,
           initial_weights: dict[str, torch.Tensor], attention: bool) -> tuple[dict[str, torch.Tensor], Any, list]:
    """One forward on the probe batch: the chosen tensors, the output, and (``attention``) every attention call
    (the last one per module), whose ``scale * q @ k^T`` are captured as "<module>:logits"."""
    recorder = _Recorder(root, chosen, initial_weights)
    outputs: list[Any] = []
    calls: list[Any] = []
    try:
        if attention:  # wherever it is computed: hptransfer's modules, SDPA in user code, transformers
            recorder_calls = AttentionRecorder(keep_logits=True)
            run_probe(root, lambda: outputs.append(model(inputs)), [recorder_calls])
            calls = recorder_calls.calls
        else:
            outputs.append(model(inputs))
    finally:
        recorder.remove()
    last = {call.module: call for call in calls}
    for name, call in last.items():
        if call.logits is not None:
            recorder.captured[f"{name}:logits"] = call.logits
    return recorder.captured, outputs[0], list(last.values())


def _scale_records(calls: list, seed: int, size: int) -> list[dict[str, Any]]:
    """``scale * head_dim`` of each attention call: mu-P's 1/d scale keeps it constant across widths, 1/sqrt(d)
    makes it grow like sqrt(d). The probe reads the scale from SDPA/flex arguments, scalars applied to q or k on
    their way to the product, and factors between q @ k^T and the softmax; a hand-written call whose scale is
    exactly 1 is left out (a scale applied some other way, e.g. inside rotary embeddings, would read as 1)."""
    return [dict(seed=seed, size=size, step=0, module=_label(f"{c.module}:scale"), kind="scale",
                 value=c.scale * c.head_dim) for c in calls if c.kind != "softmax" or c.scale != 1.0]


def _pool(key: str, axis: str) -> str:
    if key.endswith(":last"):
        return _label(key)
    return _label(index_pattern(key) if axis == "depth" else key)


def _pool_depth(result: CoordCheckResult, axis: str) -> None:
    """On the depth axis, average each pooled module's stat over its blocks (one row per seed/size/step)."""
    if axis != "depth":
        return
    pooled: dict[tuple, list[float]] = defaultdict(list)
    for r in result.records:
        pooled[(r["seed"], r["size"], r["step"], r["module"], r["kind"])].append(r["value"])
    result.records = [dict(seed=k[0], size=k[1], step=k[2], module=k[3], kind=k[4], value=float(np.mean(v)))
                      for k, v in pooled.items()]


def _fit_slopes(result: CoordCheckResult, readouts: set[str]) -> list[Slope]:
    series: dict[tuple[str, int, str], dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in result.records:
        series[(r["module"], r["step"], r["kind"])][r["seed"]][r["size"]] = r["value"]
    logit_labels = {_label(k) for k in readouts}
    slopes = []
    for (module, step, kind), by_seed in sorted(series.items()):
        per_seed = []
        for values in by_seed.values():
            xs = [s for s in sorted(values) if values[s] > 0 and math.isfinite(values[s])]
            if len(xs) >= 3:
                per_seed.append(float(np.polyfit(np.log2(xs), np.log2([values[s] for s in xs]), 1)[0]))
        if not per_seed:
            continue  # a quantity that is exactly zero (e.g. zero-init readout's first update) has no slope
        mean = float(np.mean(per_seed))
        spread = float(np.std(per_seed, ddof=1) / math.sqrt(len(per_seed))) * 2 if len(per_seed) > 1 else 0.0
        flat = result.thresholds.flat
        allowed = (-flat, flat)
        if module in logit_labels and (step == 0 or result.axis == "width"):
            allowed = (result.thresholds.init_logit_low, flat)
        if module.endswith("(attn logits)"):
            low = result.thresholds.attn_logit_low
            allowed = (-math.inf if low is None else low, flat)
        if kind == "own":
            allowed = (result.thresholds.own_low, flat)
        if result.axis == "depth" and step == 0 and kind == "out" and result.depth_alpha is not None:
            allowed = (min(0.0, 0.5 - result.depth_alpha) - flat, flat)
        slopes.append(Slope(module, step, kind, mean, mean - spread, mean + spread, allowed))
    return slopes
