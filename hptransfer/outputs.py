"""The logits of a model's output, whatever it returns: a tensor, a transformers ModelOutput, a dict, a tuple."""

from __future__ import annotations

from typing import Any

import torch

from .errors import HptError


class OutputError(HptError, TypeError):
    """A model output with no logits tensor in it."""


def output_logits(output: Any) -> torch.Tensor:
    """The tensor itself, ``.logits`` of a ModelOutput (or a dict's "logits"), or a tuple's first element."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, dict):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise OutputError(f"cannot find logits in a model output of type {type(output).__name__}; return a tensor, "
                          "or give a loss_fn that computes the loss from this output")
    return logits
