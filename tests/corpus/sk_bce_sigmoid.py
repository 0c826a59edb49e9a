"""The PyTorch documentation's nn.BCELoss pattern (a Sigmoid before BCELoss) in the common
teaching program for scikit-learn's breast-cancer data: standardised features,
nn.Sequential(Linear(30, 16), ReLU, Linear(16, 1), Sigmoid), nn.BCELoss on [B, 1] targets,
Adam at lr 1e-3, batch 32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._data import tensor_spec

SOURCE = "https://pytorch.org/docs/stable/generated/torch.nn.BCELoss.html"
GLUE = ""


def program() -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    x = torch.tensor(X, dtype=torch.float32)
    t = torch.tensor(y, dtype=torch.float32).unsqueeze(1)  # [N, 1] like the output
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, t = x[perm], t[perm]
    cut = int(0.8 * len(x))
    mean, std = x[:cut].mean(0), x[:cut].std(0)
    x = (x - mean) / std
    return {
        "model": lambda: nn.Sequential(
            nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid()
        ),
        "data": tensor_spec(x[:cut], t[:cut], x[cut:], t[cut:], "binary", 1, "tabular", 32),
        "optimizer": lambda p: torch.optim.Adam(p, lr=1e-3),
        "loss": nn.BCELoss(),
    }
