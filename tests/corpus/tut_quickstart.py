"""PyTorch tutorials, Quickstart (FashionMNIST): Flatten, Linear(784, 512), ReLU,
Linear(512, 512), ReLU, Linear(512, 10); nn.CrossEntropyLoss, SGD at lr 1e-3, batch 64;
ToTensor only (pixels in [0, 1]).

Same sizes as the original; 28x28 digits stand in for FashionMNIST.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._data import digits, tensor_spec

SOURCE = "https://pytorch.org/tutorials/beginner/basics/quickstart_tutorial.html"
GLUE = ""


class NeuralNetwork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = digits(28)
    return {
        "model": NeuralNetwork,
        "data": tensor_spec(xtr, ytr, xte, yte, "multiclass", 10, "image", 64),
        "optimizer": lambda p: torch.optim.SGD(p, lr=1e-3),
        "loss": nn.CrossEntropyLoss(),
    }
