"""PyTorch tutorials, "Training a classifier" (CIFAR-10): conv(3, 6, 5), max-pool, conv(6, 16,
5), fc 120, 84, 10; nn.CrossEntropyLoss, SGD at lr 0.001 with momentum 0.9, batch 4; inputs
normalised to [-1, 1] by Normalize((0.5,)*3, (0.5,)*3).

Same sizes; 32x32 tinted digits on noisy backgrounds stand in for CIFAR-10.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import colour_digits, tensor_spec

SOURCE = "https://pytorch.org/tutorials/beginner/blitz/cifar10_tutorial.html"
GLUE = ""


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = colour_digits(32)
    return {
        "model": Net,
        "data": tensor_spec(
            (xtr - 0.5) / 0.5, ytr, (xte - 0.5) / 0.5, yte, "multiclass", 10, "image", 4
        ),
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.001, momentum=0.9),
        "loss": nn.CrossEntropyLoss(),
    }
