"""Helpers shared by several checks (the leading underscore keeps it out of the registry)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trackcheck.context import Context


@torch.no_grad()
def outputs_at_init(ctx: Context, model: nn.Module, n: int) -> tuple[Tensor, Tensor]:
    """Outputs of an untrained model on ``n`` shuffled training examples, in training mode
    (the mode the first training step sees), batch by batch. Returns (out, y) concatenated."""
    model.train()
    outs, ys, seen = [], [], 0
    for x, y in ctx.train_batches(seed_offset=101):
        outs.append(ctx.forward(model, x).float().cpu())
        ys.append(y.cpu())
        seen += len(y)
        if seen >= n:
            break
    return torch.cat(outs)[:n], torch.cat(ys)[:n]


def fmt_values(t: Tensor, k: int = 6) -> str:
    """A short printable list of tensor values: [0.52] or [-0.1, 0.3, ... (10 values)]."""
    vals = [f"{v:.3g}" for v in t.reshape(-1).tolist()]
    if len(vals) > k:
        return "[" + ", ".join(vals[:k]) + f", ... ({len(vals)} values)]"
    return "[" + ", ".join(vals) + "]"
