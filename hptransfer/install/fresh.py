"""Whether a model's weights are a fresh init, before ``init="rescale"`` multiplies them by the rule's factors.

Rescaling is right for a freshly built model and wrong for loaded (pretrained, already trained) weights, which
must be kept (``init="keep"``). Evidence that weights are not fresh, each a fact about the init code, not a
guess from names:

- a normalization layer of torch (LayerNorm, RMSNorm, GroupNorm, BatchNorm, InstanceNorm) whose gain or bias is
  not constant: their ``reset_parameters`` sets ones and zeros, and training moves each entry differently;
- with a real base: a vector that is constant in the base (the same init code at another width) but not in the
  model;
- with a real base: a Linear or Conv whose weight in the base is PyTorch's default init (recognised exactly, see
  ``is_pytorch_default``) while the model's same weight is not: the model's class draws the default, so the
  model's values were put there after it was built.
"""

from __future__ import annotations

from typing import Callable

import math

import torch
from torch import nn

from ..plan import Plan

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm")
                                                                       else ()))


def is_pytorch_default(module: nn.Module, leaf: str, param: torch.Tensor) -> bool:
    """Whether a Linear/Conv weight or bias is exactly PyTorch's default: uniform on +-1/sqrt(fan_in).

    The maximum of n uniform draws lies within a factor (1 - 12/n) of the bound with probability 1 - e^-12, and
    any normal init exceeds a bound near its std within a few draws, so the test does not confuse the two.
    """
    if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or leaf not in ("weight", "bias") or param is None:
        return False
    weight = module.weight
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    bound = 1.0 / math.sqrt(fan_in)
    values = param.detach().float().flatten()
    values = values[values != 0]  # rows zeroed on purpose (a zero-init query) keep the rest default
    if values.numel() < 2:
        return False
    largest = float(values.abs().max())
    std = float(values.pow(2).mean().sqrt())
    return (largest <= bound * (1 + 1e-6) and largest >= bound * (1 - 12.0 / values.numel())
            and abs(std * math.sqrt(3.0) / bound - 1) < 0.1 + 3.0 / math.sqrt(values.numel()))


def _constant(tensor: torch.Tensor) -> bool:
    values = tensor.detach().flatten()
    return values.numel() < 2 or bool((values == values[0]).all())


@torch.no_grad()
def not_fresh(root: nn.Module, plan: Plan, base: nn.Module | None,
              base_name: Callable[[str], str | None]) -> list[str]:
    """Each parameter whose values show the model is not freshly initialized, with the evidence (empty: fresh)."""
    modules = dict(root.named_modules())
    base_params = dict(base.named_parameters(remove_duplicate=False)) if base is not None else {}
    base_modules = dict(base.named_modules()) if base is not None else {}
    found = []
    for name, param in root.named_parameters():
        if name not in plan.params or param.is_meta:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = modules[owner_name]
        matched = base_name(name) if base is not None else None
        base_param = base_params.get(matched) if matched else None
        real = base_param is not None and not base_param.is_meta
        if isinstance(owner, NORMS) and param.dim() == 1 and not _constant(param):
            found.append(f"{name} (a {type(owner).__name__} {leaf} that is not constant: a fresh one is all "
                         f"{'ones' if leaf == 'weight' else 'zeros'})")
        elif real and param.dim() == 1 and _constant(base_param) and not _constant(param):
            found.append(f"{name} (constant in the base, {float(base_param.flatten()[0]):.4g}, not in the model)")
        elif real and leaf == "weight" and isinstance(owner, (nn.Linear, nn.modules.conv._ConvNd)):
            base_owner = base_modules.get(matched.rpartition(".")[0])
            if is_pytorch_default(base_owner, leaf, base_param) and not is_pytorch_default(owner, leaf, param):
                found.append(f"{name} (PyTorch's default init in the base, something else in the model)")
    return found
