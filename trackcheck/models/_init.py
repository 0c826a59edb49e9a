from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def set_output_bias(
    layer: nn.Linear, out_bias: float | Sequence[float] | torch.Tensor | None
) -> None:
    """Karpathy's "init well": start the final bias at the prior (log class frequencies,
    the logit of the positive rate, or the target mean) so the net does not spend its first
    steps learning it. ``None`` keeps PyTorch's default init."""
    if out_bias is None:
        return
    if layer.bias is None:
        raise ValueError("out_bias given but the final layer has no bias")
    b = torch.as_tensor(out_bias, dtype=layer.bias.dtype).reshape(-1)
    if b.numel() not in (1, layer.bias.numel()):
        raise ValueError(
            f"out_bias has {b.numel()} values, the final layer has {layer.bias.numel()}"
        )
    with torch.no_grad():
        layer.bias.copy_(b.expand_as(layer.bias))
