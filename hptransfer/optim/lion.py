"""Lion (Chen et al. 2023), the sign-update optimizer of the "sign" rule family."""

from __future__ import annotations

from typing import Any, Callable

import torch

from .closure import evaluate_closure


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): step by the sign of an interpolation of momentum and gradient, decoupled decay.

    ``p -= lr * (sign(beta1 * m + (1 - beta1) * g) + weight_decay * p)``, then ``m = beta2 * m + (1 - beta2) * g``.
    Its LR is typically 3-10x smaller than AdamW's and its weight decay as much larger.
    """

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lion: lr={lr} must be >= 0 and betas={betas} in [0, 1)")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                momentum = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(momentum.mul(beta1).add(p.grad, alpha=1 - beta1)), alpha=-group["lr"])
                momentum.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss
