"""The measured safety net: after parametrize() installs a plan, the model at init against its base.

mu-P makes predictions a forward can test. At init a hidden activation has the base's rms at every width; the
input of a readout too; each attention call applies the scale the plan computed. One small forward of the model
and one of the base (a CPU copy when the base is on the meta device) compare them. What deviates past
``TOLERANCE`` is something the rules did not reach: a constant in the forward that grows with width (Gemma's
sqrt(hidden) embedding normalizer, T5's d_model^-1/2 before a tied head), an init the plan could not tell, an
attention the install missed. parametrize() refuses the model with the module, the measured ratio, its width
exponent and the fix, unless the check is skipped explicitly (``parametrize(..., check=False)``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from torch.overrides import TorchFunctionMode

from .plan import Plan
from .probe.activations import ActivationRecorder
from .probe.attention import AttentionCall, AttentionRecorder
from .probe.forward import run_probe, untouched
from .probe.run import forward_of

# A hidden activation deviates when its rms is off the base's by more than TOLERANCE *and* by more than
# EXPONENT_TOLERANCE as a power of the width multiplier: finite-width noise (one random draw of each model, a
# few tokens; up to 1.3x for an attention output of a 32-wide base) stays within the first; a constant that grows
# like width^1/2 breaks both from 2.25x the base's width on (2x at 4x).
TOLERANCE = 1.5
EXPONENT_TOLERANCE = 0.25
NOISE_SIGMAS = 3.0  # the base draws' log-spread a model's one draw may stray by, on top of TOLERANCE
SCALE_TOLERANCE = 1e-4  # an attention call's applied scale against the plan's (an exact quantity)


@dataclass
class Deviation:
    """One quantity that does not match mu-P's prediction."""

    kind: str  # "activation", "readout input", "attention"
    module: str
    ratio: float  # model / base (attention: applied / planned)
    exponent: float | None = None  # log(ratio) / log(width multiplier)

    def describe(self) -> str:
        exp = f", width exponent {self.exponent:+.2f}" if self.exponent is not None else ""
        what = {"activation": "output rms", "input": "input rms", "readout input": "input rms (of a readout)",
                "attention": "attention logit scale"}[self.kind]
        return f"{self.module or '<root>'}: {what} x{self.ratio:.3g} the base's{exp}"


@dataclass
class CheckReport:
    """The safety net's result: what was compared, the worst ratio and every deviation (empty: passed)."""

    ran: bool
    reason: str = ""
    compared: int = 0
    attention_calls: int = 0
    worst: float = 1.0  # the compared ratio farthest from 1
    deviations: list[Deviation] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.ran and not self.deviations

    @property
    def summary(self) -> str:
        if not self.ran:
            return f"not run: {self.reason}"
        head = (f"{self.compared} activation(s) and {self.attention_calls} attention call(s) against the base, worst "
                f"ratio {self.worst:.3g} ({self.seconds:.2f} s)")
        return head + (f"; {len(self.deviations)} deviation(s)" if self.deviations else ": as mu-P predicts")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary
        return data


_PRODUCTS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm, torch.einsum}
_SOFTMAX = {torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax}


class UniformAttention(TorchFunctionMode):
    """Every attention's q.k term taken out of its logits, which keep their masks and biases.

    At init mu-P shrinks the random q.k part of the logits with width (1/d instead of 1/sqrt(d)), so attention is
    more uniform in a wide model than in its base wherever the base's logits are order one (T5's init makes them
    so). The activations are compared without it, the applied scales exactly, each on its own. SDPA gets a zero
    scale; a hand-written softmax gets what the ops after the product make of zeros in its place (masks, biases,
    a softcap's tanh(0) = 0), replayed alongside.
    """

    def __init__(self) -> None:
        super().__init__()
        self._logits: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (logits, the same without q.k)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            return func(*args, **dict(kwargs, scale=0.0))
        if func in _SOFTMAX and args:
            entry = self._logits.get(id(args[0]))
            if entry is not None and entry[0] is args[0]:
                return func(entry[1], *args[1:], **kwargs)
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor):
            return out
        if func in _PRODUCTS:
            operands = [a for a in (args[1:] if func is torch.einsum else args[:2]) if isinstance(a, torch.Tensor)]
            if len(operands) == 2 and all(t.dim() >= 3 and not isinstance(t, nn.Parameter) for t in operands):
                self._logits[id(out)] = (out, torch.zeros_like(out))
        elif args and isinstance(args[0], torch.Tensor):
            entry = self._logits.get(id(args[0]))
            if entry is not None and entry[0] is args[0] and out.shape == args[0].shape:
                replayed = tuple(entry[1] if a is args[0] else a for a in args)
                self._logits[id(out)] = (out, func(*replayed, **kwargs))
        return out


@contextlib.contextmanager
def quiet_forward(*models: nn.Module) -> Iterator[None]:
    """Train mode with dropout off, the same random draws in every forward, BatchNorm statistics and the RNG
    left as they were."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
    try:
        with untouched(*models):
            torch.manual_seed(0)
            yield
    finally:
        for module, training in modes:
            module.training = training


def _excluded(plan: Plan, names: Sequence[str]) -> set[str]:
    """Readouts and every module that contains one: their outputs are logits, which mu-P shrinks at init."""
    readouts = [m.name for m in plan.modules if m.kind == "readout"]
    return {n for n in names if any(r == n or r.startswith(n + ".") or n == "" for r in readouts)}


MIN_ENTRIES = 256  # a module with fewer parameter entries in the base outputs a handful of random numbers


def compared_modules(root: nn.Module, base: nn.Module, plan: Plan) -> list[str]:
    """Modules with parameters in both the model and the base, readouts and their parents excluded; a module with
    fewer than MIN_ENTRIES parameter entries in the base (a 32 x 4 relative-position table) is left out: its
    output's rms is the noise of one small draw."""
    base_modules = dict(base.named_modules())
    names = [n for n, m in root.named_modules() if n and n in base_modules and any(True for _ in m.parameters())
             and sum(p.numel() for p in base_modules[n].parameters()) >= MIN_ENTRIES]
    skip = _excluded(plan, names)
    return [n for n in names if n not in skip]


class _Mean:
    """Activations averaged over several draws of the base (a narrow base's one draw is noisy), with the spread
    of their log between draws (how far one draw strays: the check's tolerance widens by it)."""

    def __init__(self, recorders: list[ActivationRecorder]) -> None:
        self.outputs, self.output_spread = _average([r.outputs for r in recorders])
        self.inputs, self.input_spread = _average([r.inputs for r in recorders])


def _average(values: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    keys = set.intersection(*(set(v) for v in values)) if values else set()
    means = {k: sum(v[k] for v in values) / len(values) for k in keys}
    spreads = {}
    for key in keys:
        logs = [math.log(v[key]) for v in values if v[key] > 0 and math.isfinite(v[key])]
        if len(logs) == len(values) > 1:
            center = sum(logs) / len(logs)
            spreads[key] = math.sqrt(sum((x - center) ** 2 for x in logs) / (len(logs) - 1))
    return means, spreads


def run_check(root: nn.Module, bases: Sequence[nn.Module], plan: Plan, args: tuple, kwargs: dict,
              targets: Sequence[float] | None = None) -> CheckReport:
    """Compare ``root`` (parametrized, at init) with ``bases`` (draws of the base with values) on one forward each.

    Args:
        targets: the scale each of the model's attention calls must apply (hptransfer.structure.attention), in
            call order; None skips the attention comparison.
    """
    start = time.perf_counter()
    base = bases[0]
    names = set(compared_modules(root, base, plan))
    readouts = [m.name for m in plan.modules if m.kind == "readout"]
    with quiet_forward(root, *bases):
        recorders = []
        for draw in bases:
            with ActivationRecorder(draw, names, names | set(readouts)) as recorder, UniformAttention():
                run_probe(draw, forward_of(draw, args, kwargs), [])
            recorders.append(recorder)
        base_acts = _Mean(recorders)
        attention = AttentionRecorder()
        every = [n for n, m in root.named_modules() if n and any(True for _ in m.parameters())]
        with ActivationRecorder(root, every, names | set(readouts)) as acts, UniformAttention():
            run_probe(root, forward_of(root, args, kwargs), [attention])
    report = CheckReport(ran=True)
    log_width = math.log(plan.width_mult) if plan.width_mult > 0 and plan.width_mult != 1 else None
    order = list(acts.outputs)  # the order the forward ran them
    base_names = {n for n, _ in base.named_modules()}
    added = [n for n, _ in root.named_modules() if n and n not in base_names]
    stops = [_first_block(order, plan) if plan.depth_mult != 1.0 else None, _first_added(root, order, added)]
    stop = min((s for s in stops if s is not None), default=None)
    stop_name = order[stop] if stop is not None else None
    for kind, name in acts.timeline:
        if kind == "output" and name == stop_name:
            break  # past a block the base lacks, or (depth rules) the first block: the stream differs from here
        if name not in names or any(a.startswith(name + ".") for a in added):
            continue  # not in the base, a readout, or holds a block the base does not have
        if kind == "output":
            _compare(report, "activation", name, acts.outputs.get(name), base_acts.outputs.get(name), log_width,
                     base_acts.output_spread.get(name, 0.0))
        else:
            _compare(report, "input", name, acts.inputs.get(name), base_acts.inputs.get(name), log_width,
                     base_acts.input_spread.get(name, 0.0))
    if plan.depth_mult == 1.0 and not added:
        for name in readouts:
            _compare(report, "readout input", name, acts.inputs.get(name), base_acts.inputs.get(name), log_width,
                     base_acts.input_spread.get(name, 0.0))
    if targets is not None:
        _compare_attention(report, attention.calls, targets)
    report.seconds = time.perf_counter() - start
    return report


def _first_added(root: nn.Module, order: list[str], added: list[str]) -> int | None:
    hits = [i for i, n in enumerate(order) if n in added]
    return min(hits) if hits else None


def _first_block(order: list[str], plan: Plan) -> int | None:
    blocks = {r.block for r in plan.params.values() if r.block}
    hits = [i for i, n in enumerate(order) if any(n == b or n.startswith(b + ".") for b in blocks)]
    return min(hits) if hits else None


def _compare(report: CheckReport, kind: str, name: str, model: float | None, base: float | None,
             log_width: float | None, spread: float = 0.0) -> None:
    """Record a deviation when ``model / base`` is off by more than TOLERANCE (widened by ``spread``, the
    log-spread of the base's draws: NOISE_SIGMAS of it, for a base too narrow or a batch too small for one draw
    to be typical) and by more than EXPONENT_TOLERANCE as a power of the width multiplier."""
    if model is None or base is None or not (math.isfinite(model) and math.isfinite(base)):
        return
    if base < 1e-12 and model < 1e-12:
        return  # zero in both (a zero-init layer)
    report.compared += 1
    ratio = model / base if base > 0 else math.inf
    if abs(math.log(max(ratio, 1e-300))) > abs(math.log(max(report.worst, 1e-300))):
        report.worst = ratio
    exponent = math.log(ratio) / log_width if log_width and math.isfinite(ratio) and ratio > 0 else None
    tolerance = TOLERANCE * math.exp(NOISE_SIGMAS * spread)
    if not (1 / tolerance <= ratio <= tolerance) and (exponent is None or abs(exponent) > EXPONENT_TOLERANCE):
        report.deviations.append(Deviation(kind, name, ratio, exponent))


def _compare_attention(report: CheckReport, calls: Sequence[AttentionCall], targets: Sequence[float]) -> None:
    report.attention_calls = len(calls)
    if len(calls) != len(targets):
        report.deviations.append(Deviation("attention", "", math.nan))
        return
    for call, target in zip(calls, targets):
        if target and abs(call.scale / target - 1.0) > SCALE_TOLERANCE:
            report.deviations.append(Deviation("attention", call.module, call.scale / target))


def refusal(report: CheckReport, plan: Plan) -> str:
    """The CheckError message for a report with deviations: what deviates, by how much, and what to do."""
    lines = [d.describe() for d in report.deviations[:6]]
    more = f" (and {len(report.deviations) - 6} more)" if len(report.deviations) > 6 else ""
    causes = []
    kinds = {d.kind for d in report.deviations}
    if kinds & {"activation", "input", "readout input"}:
        causes.append(
            "an activation at init differs from the base's, which mu-P keeps equal: usually a constant in the forward "
            "that depends on the width (an embedding multiplied by sqrt(d_model), a head multiplied by "
            "d_model^-1/2, a scale computed from a width), or an init the rules could not reach. Make the constant "
            "the base's value (or register an adapter that does), or pass a real base so its init is measured")
    if "attention" in kinds:
        causes.append("an attention call does not apply the scale the plan set: its scale is reached in a way "
                      "hptransfer did not install; keep it in one float attribute of the attention module")
    return (f"the parametrized model does not do what mu-P predicts at init ({plan.scheme}, width x"
            f"{plan.width_mult:g}): {'; '.join(lines)}{more}. Likely cause: {' Also: '.join(causes)}. "
            "If you know why and accept it, pass check=False to parametrize.")


DRAWS = 3  # draws of a materialized meta base whose activations are averaged


def base_with_values(base: Any, materialize: Callable[[nn.Module], nn.Module | None]) -> list[nn.Module]:
    """Copies of the base that can run a forward with its real init: a deep copy of a real base, or ``DRAWS``
    draws of what ``materialize`` makes of a meta one (raises with the reason when it cannot; None: one draw is
    all there is)."""
    if not any(t.is_meta for t in [*base.parameters(), *base.buffers()]):
        return [copy.deepcopy(base)]
    draws = []
    for seed in range(DRAWS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            draw = materialize(base)
        if draw is None:
            break
        draws.append(draw)
    return draws
