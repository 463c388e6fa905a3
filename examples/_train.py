"""A few AdamW steps on the built-in text, shared by the examples (the loss must fall)."""

from __future__ import annotations

import torch

import hptransfer as hpt
from hptransfer.data.text import text_batch
from hptransfer.outputs import output_logits


def train_steps(model: torch.nn.Module, lr: float, steps: int = 20, seq: int = 32) -> tuple[float, float]:
    """First and last loss of ``steps`` AdamW steps with hptransfer's per-parameter groups."""
    optimizer = torch.optim.AdamW(hpt.param_groups(model, lr=lr, weight_decay=0.0))
    losses = []
    for step in range(steps):
        inputs, targets, _ = text_batch(8, seq, seed=step)
        logits = output_logits(model(inputs))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


def vocab_size() -> int:
    return text_batch(1, 8)[2]
