"""The short training loops the checks share: the same loop training would run, in miniature."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from trackcheck.context import Context


def train_steps(
    ctx: Context,
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
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
        x, y = next(it)
        opt.zero_grad(set_to_none=True)
        loss = ctx.task.loss(model(x), y)
        ctx.meter.backward(loss)
        opt.step()
        v = float(loss.detach())
        losses.append(v)
        if (on_step is not None and on_step(step, v)) or not math.isfinite(v):
            break
    return losses


def repeat(batch: tuple[Tensor, Tensor]) -> Iterable[tuple[Tensor, Tensor]]:
    """The same batch forever (overfitting one batch)."""
    while True:
        yield batch
