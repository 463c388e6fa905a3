"""Running a model or its base for a probe: inputs in any form, on the right device, and a base with values.

A base on the meta device has shapes but no values. The attention probe needs only shapes and the scales the
code passes, so it runs on meta when it can; the activation check needs the base's real init, so it runs on a
CPU copy: one an adapter rebuilds from the family's config, or a generic copy whose parameters are drawn at the
base stds the plan found. A generic copy cannot recover buffers that the meta base lost (a rotary table, a
constant kept in a 0-d buffer); it then says which, and the check asks for a real base.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import torch
from torch import nn


class Inputs:
    """Positional and keyword arguments of one call, kept apart (``as_args`` passes them through)."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.args, self.kwargs = args, kwargs


def as_args(inputs: Any) -> tuple[tuple, dict]:
    """Example inputs as (args, kwargs): a dict is keyword arguments, a tuple positional ones, else one arg."""
    if isinstance(inputs, Inputs):
        return inputs.args, inputs.kwargs
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, tuple):
        return inputs, {}
    return (inputs,), {}


def to_device(value: Any, device: torch.device | str) -> Any:
    """``value`` with every tensor in it moved to ``device`` (tuples, lists and dicts kept)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def device_of(module: nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def small_batch(args: tuple, kwargs: dict, size: int = 2) -> tuple[tuple, dict]:
    """The first ``size`` samples: every tensor whose leading dim is the batch size is sliced along it.

    The batch size is the leading dim shared by most tensor inputs; tensors without it (masks of another shape,
    scalars) pass unchanged. Keeps a probe of the first real batch cheap."""
    tensors = [t for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor) and t.dim() > 0]
    if not tensors:
        return args, kwargs
    sizes = [t.shape[0] for t in tensors]
    batch = max(set(sizes), key=sizes.count)
    if batch <= size:
        return args, kwargs

    def cut(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
            return value[:size]
        return value

    return tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()}


def forward_of(model: nn.Module, args: tuple, kwargs: dict) -> Callable[[], Any]:
    """A zero-argument call of ``model`` on the inputs, moved to the model's device."""
    device = device_of(model)
    moved_args, moved_kwargs = to_device(args, device), to_device(kwargs, device)
    return lambda: model(*moved_args, **moved_kwargs)


def is_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in [*module.parameters(), *module.buffers()])


def arbitrary_cpu_copy(base: nn.Module) -> nn.Module:
    """A CPU copy of a meta base with arbitrary values (N(0, 0.02) floats, zero integers): enough for probes
    that read shapes and the scales the code passes, not for activation statistics."""
    cpu = copy.deepcopy(base).to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*cpu.parameters(), *cpu.buffers()]:
            tensor.normal_(0.0, 0.02) if tensor.is_floating_point() else tensor.zero_()
    return cpu


class MaterializeError(Exception):
    """A meta base that cannot be given its real values (the message says which buffer and why)."""


def value_stats(model: nn.Module) -> dict[str, tuple[float, bool]]:
    """Each parameter's (mean, whether all its entries are equal): what materialize_base reads of the model, to
    compute once for several draws (the model may be large)."""
    stats = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            values = param.detach().flatten()
            head = values[:1024]  # a random init differs within its first entries: the full scan is for constants
            constant = values.numel() < 2 or (bool((head == head[0]).all()) and bool((values == values[0]).all()))
            # matrices are drawn around zero; a vector's mean (a gain near one) is kept
            mean = float(values.float().mean()) if param.dim() < 2 and values.numel() else 0.0
            stats[name] = (mean, constant)
    return stats


def materialize_base(base: nn.Module, model: nn.Module, base_stds: Mapping[str, float | None],
                     base_name: Callable[[str], str | None],
                     stats: Mapping[str, tuple[float, bool]] | None = None) -> nn.Module:
    """A CPU copy of the base with its init: each parameter drawn at the base std the plan found (``base_stds``,
    keyed by the *model's* parameter names; None: a constant, copied from the model), BatchNorm statistics reset,
    and buffers copied from the model where they have the base's shape and more than one entry.

    Raises MaterializeError for a buffer it cannot recover (another shape than the model's, or a 0-d constant,
    which may hold a width-dependent value the meta base lost)."""
    cpu = copy.deepcopy(base).to_empty(device="cpu")
    model_params = dict(model.named_parameters())
    model_buffers = dict(model.named_buffers())
    stats = stats if stats is not None else value_stats(model)
    by_base_name: dict[str, str] = {}
    for name in model_params:
        target = base_name(name)
        if target is not None:
            by_base_name.setdefault(target, name)
    with torch.no_grad():
        for name, param in cpu.named_parameters():
            source_name = by_base_name.get(name)
            source = model_params.get(source_name) if source_name else None
            if source is None:
                raise MaterializeError(f"parameter {name!r} of the base has no counterpart in the model")
            mean, constant = stats[source_name]
            std = base_stds.get(source_name) if source_name else None
            if std is None or constant:
                param.fill_(float(source.detach().flatten()[0]) if source.numel() else 0.0)
            else:
                param.normal_(mean, std)
        for module in cpu.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                module.reset_running_stats()
        stats = {f"{n}.{b}" if n else b for n, m in cpu.named_modules()
                 if isinstance(m, nn.modules.batchnorm._NormBase) for b in ("running_mean", "running_var",
                                                                             "num_batches_tracked")}
        for name, buffer in cpu.named_buffers():
            if name in stats:
                continue
            source = model_buffers.get(name)
            if source is None or tuple(source.shape) != tuple(buffer.shape):
                raise MaterializeError(
                    f"buffer {name!r} {tuple(buffer.shape)} of the meta base has "
                    f"{'no counterpart in the model' if source is None else f'another shape in the model {tuple(source.shape)}'}"
                    ", so its values (computed when the base was built) are lost")
            if buffer.dim() == 0 and buffer.is_floating_point():
                raise MaterializeError(f"buffer {name!r} of the meta base is a 0-d constant whose value at the base's "
                                       "width is lost (the model's may depend on its width)")
            buffer.copy_(source.to(buffer.dtype))
    return cpu
