"""PyTorch tutorials, "What is torch.nn really?": Mnist_CNN, three stride-2 convs (16, 16, 10
channels) with ReLU, avg_pool2d(4) to [B, 10] logits; the input is the flat [B, 784] vector
viewed as [B, 1, 28, 28]; F.cross_entropy, SGD at lr 0.1 with momentum 0.9, batch 64.

Same sizes as the original.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import digits, tensor_spec

SOURCE = "https://pytorch.org/tutorials/beginner/nn_tutorial.html"
GLUE = ""


class Mnist_CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1)

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        xb = xb.view(-1, 1, 28, 28)
        xb = F.relu(self.conv1(xb))  # [B, 16, 14, 14]
        xb = F.relu(self.conv2(xb))  # [B, 16, 7, 7]
        xb = F.relu(self.conv3(xb))  # [B, 10, 4, 4]
        xb = F.avg_pool2d(xb, 4)
        return xb.view(-1, xb.size(1))


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = digits(28)
    flat = (xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1))
    return {
        "model": Mnist_CNN,
        "data": tensor_spec(flat[0], ytr, flat[1], yte, "multiclass", 10, "tabular", 64),
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        "loss": F.cross_entropy,
    }
