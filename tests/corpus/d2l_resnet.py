"""Dive into Deep Learning, "Residual Networks (ResNet)" (PyTorch): Residual blocks whose 3x3
convs keep their bias and feed BatchNorm, an optional 1x1 conv shortcut; a 7x7 stem with
BatchNorm and max-pool, global average pooling, a Linear head; cross-entropy, SGD at lr 0.05,
batch 256 (the book's Fashion-MNIST run).

Tiny: 8-16 channels, one residual block per stage, 16x16 digits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import digits, tensor_spec

SOURCE = "https://d2l.ai/chapter_convolutional-modern/resnet.html"
GLUE = ""


class Residual(nn.Module):
    def __init__(
        self, in_c: int, num_channels: int, use_1x1conv: bool = False, strides: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, num_channels, kernel_size=3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
        self.conv3 = (
            nn.Conv2d(in_c, num_channels, kernel_size=1, stride=strides) if use_1x1conv else None
        )
        self.bn1 = nn.BatchNorm2d(num_channels)
        self.bn2 = nn.BatchNorm2d(num_channels)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        Y = F.relu(self.bn1(self.conv1(X)))
        Y = self.bn2(self.conv2(Y))
        if self.conv3:
            X = self.conv3(X)
        return F.relu(Y + X)


def resnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=7, stride=2, padding=3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        Residual(8, 8),
        Residual(8, 16, use_1x1conv=True, strides=2),
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = digits(16)
    return {
        "model": resnet,
        "data": tensor_spec(xtr, ytr, xte, yte, "multiclass", 10, "image", 256),
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.05),
        "loss": nn.CrossEntropyLoss(),
    }
