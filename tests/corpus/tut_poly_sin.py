"""PyTorch tutorials, "Learning PyTorch with Examples" (PyTorch: optim): fit sin(x) on
[-pi, pi] with nn.Sequential(Linear(3, 1), Flatten(0, 1)) on the features (x, x^2, x^3);
nn.MSELoss(reduction='sum'); RMSprop at lr 1e-3; all 2000 points as one batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._data import tensor_spec

SOURCE = "https://pytorch.org/tutorials/beginner/pytorch_with_examples.html"
GLUE = ""


def program() -> dict[str, Any]:
    x = torch.linspace(-math.pi, math.pi, 2500)
    y = torch.sin(x)
    xx = x.unsqueeze(-1).pow(torch.tensor([1, 2, 3]))  # [N, 3]
    perm = torch.randperm(2500, generator=torch.Generator().manual_seed(0))
    tr, te = perm[:2000], perm[2000:]
    return {
        "model": lambda: nn.Sequential(nn.Linear(3, 1), nn.Flatten(0, 1)),
        "data": tensor_spec(xx[tr], y[tr], xx[te], y[te], "regression", 1, "tabular", 2000),
        "optimizer": lambda p: torch.optim.RMSprop(p, lr=1e-3),
        "loss": nn.MSELoss(reduction="sum"),
    }
