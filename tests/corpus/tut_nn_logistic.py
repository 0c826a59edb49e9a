"""PyTorch tutorials, "What is torch.nn really?": Mnist_Logistic, one Linear(784, 10) on
flattened images, F.cross_entropy, SGD at lr 0.5, batch 64.

Same sizes; 28x28 digits, flattened as the tutorial's pickled MNIST is ([N, 784] floats).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import digits, tensor_spec

SOURCE = "https://pytorch.org/tutorials/beginner/nn_tutorial.html"
GLUE = ""


class Mnist_Logistic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(784, 10)

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        return self.lin(xb)


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = digits(28)
    flat = (xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1))
    return {
        "model": Mnist_Logistic,
        "data": tensor_spec(flat[0], ytr, flat[1], yte, "multiclass", 10, "tabular", 64),
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.5),
        "loss": F.cross_entropy,
    }
