from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from trackcheck.models._init import set_output_bias


class MLP(nn.Module):
    """Flatten, ``depth`` hidden layers of ``width`` with ReLU, then a linear head."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        width: int = 64,
        depth: int = 2,
        out_bias: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = math.prod(in_shape)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, out_features)
        set_output_bias(self.head, out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(x))  # [B, out_features]
        return out.squeeze(-1) if out.shape[-1] == 1 else out
