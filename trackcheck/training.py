"""The short training loops the checks share: the same loop training would run, in miniature.

Each step goes through ``ctx.train_step``: the user's own step when one is configured, else
zero_grad, the configured loss, backward, step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from trackcheck.context import Context
from trackcheck.pipeline import Batch


def train_steps(
    ctx: Context,
    model: nn.Module,
    batches: Iterable[Batch],
    steps: int,
    optimizer: torch.optim.Optimizer | None = None,
    on_step: Callable[[int, float], Any] | None = None,
) -> list[float]:
    """Run ``steps`` optimizer steps; return the per-step training losses.

    Stops early, returning what it has, when ``on_step(step, loss)`` returns True or the
    loss turns NaN/Inf (the caller judges that).
    """
    opt = optimizer or ctx.optimizer(model)
    model.train()
    losses: list[float] = []
    it = iter(batches)
    for step in range(steps):
        v = ctx.train_step(model, next(it), opt)
        losses.append(v)
        if (on_step is not None and on_step(step, v)) or not math.isfinite(v):
            break
    return losses


def repeat(batch: Batch) -> Iterable[Batch]:
    """The same batch forever (overfitting one batch)."""
    while True:
        yield batch
