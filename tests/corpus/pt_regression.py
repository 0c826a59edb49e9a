"""pytorch/examples regression/main.py: fit a degree-4 polynomial with one Linear(4, 1) on
the features (x, x^2, x^3, x^4), F.smooth_l1_loss, plain SGD at lr 0.1 (the original updates
``param.data`` by hand), batch 32; targets [B, 1] as the output.

The original draws a fresh random batch each step; here a fixed set of 1024 draws.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import tensor_spec

SOURCE = "https://github.com/pytorch/examples/blob/main/regression/main.py"
GLUE = ""
POLY_DEGREE = 4


def make_features(x: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 4]: the columns x, x^2, x^3, x^4."""
    x = x.unsqueeze(1)
    return torch.cat([x**i for i in range(1, POLY_DEGREE + 1)], 1)


def program() -> dict[str, Any]:
    g = torch.Generator().manual_seed(5)
    w_target = torch.randn(POLY_DEGREE, 1, generator=g) * 5
    b_target = torch.randn(1, generator=g) * 5
    x = make_features(torch.randn(1280, generator=g))
    y = x.mm(w_target) + b_target  # [N, 1]
    data = tensor_spec(x[:1024], y[:1024], x[1024:], y[1024:], "regression", 1, "tabular", 32)
    return {
        "model": lambda: nn.Linear(POLY_DEGREE, 1),
        "data": data,
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.1),
        "loss": F.smooth_l1_loss,
    }
