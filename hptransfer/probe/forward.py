"""One probe forward: run a model once under a torch-function mode and let recorders see every op.

Recorders (attention calls, parameter layout) share one pass, and with it the stack of modules being run, so
each observation is tied to the module it happened in. Nothing here changes the model.
"""

from __future__ import annotations

import contextlib
from contextlib import nullcontext
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


class Recorder(Protocol):
    """Sees every torch function call of a probe forward, after it ran."""

    def observe(self, func: Any, args: tuple, kwargs: dict, out: Any, where: str) -> None: ...

    def finish(self) -> None: ...


class ModuleStack:
    """The names of the modules being run, innermost last (global forward hooks while it is active)."""

    def __init__(self, root: nn.Module) -> None:
        self.names = {id(m): n for n, m in root.named_modules()}
        self.stack: list[str] = []
        self._handles: list[Any] = []

    def __enter__(self) -> "ModuleStack":
        self._handles = [nn.modules.module.register_module_forward_pre_hook(self._push),
                         nn.modules.module.register_module_forward_hook(self._pop, always_call=True)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _push(self, module: nn.Module, args: Any) -> None:
        if id(module) in self.names:
            self.stack.append(self.names[id(module)])

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        if id(module) in self.names and self.stack:
            self.stack.pop()

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else ""


class ProbeMode(TorchFunctionMode):
    """Dispatches every torch function call to the recorders with the module it ran in."""

    def __init__(self, modules: ModuleStack, recorders: Sequence[Recorder]) -> None:
        super().__init__()
        self.modules = modules
        self.recorders = list(recorders)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        where = self.modules.current
        for recorder in self.recorders:
            recorder.observe(func, args, kwargs, out, where)
        return out


@contextlib.contextmanager
def untouched(*models: nn.Module) -> Iterator[None]:
    """The models' BatchNorm statistics and the CPU RNG as they were before (a probe forward in train mode would
    update the one and draw from the other)."""
    saved = [(m, [b.detach().clone() for b in m.buffers(recurse=False)]) for model in models for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._NormBase)]
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        with torch.no_grad():
            for module, values in saved:
                for buffer, value in zip(module.buffers(recurse=False), values):
                    buffer.copy_(value)


def run_probe(root: nn.Module, forward: Callable[[], Any], recorders: Sequence[Recorder]) -> Any:
    """Run ``forward`` once (no grad, eager) with every recorder watching; returns the forward's output. The
    model's BatchNorm statistics and the RNG are left as they were."""
    modules = ModuleStack(root)
    # flex_attention compiles a wrapper even in eager mode; a probe must not trigger (re)compiles
    stance = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else nullcontext()
    try:
        with torch.no_grad(), untouched(root), stance, modules, ProbeMode(modules, recorders):
            return forward()
    finally:
        for recorder in recorders:
            recorder.finish()
