"""kuangliu/pytorch-cifar (the widely used CIFAR-10 ResNet, torchvision's BasicBlock): convs
without bias, each followed by BatchNorm, identity or 1x1-conv shortcuts; nn.CrossEntropyLoss,
SGD at lr 0.1, momentum 0.9, weight decay 5e-4, batch 128; inputs normalised per channel.

Tiny: 8-16-32 channels, one BasicBlock per stage (ResNet-18 has two of 64-512).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import colour_digits, tensor_spec

SOURCE = "https://github.com/kuangliu/pytorch-cifar/blob/master/models/resnet.py"
GLUE = ""


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, num_blocks: tuple[int, ...] = (1, 1, 1), num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 8
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = self._make_layer(8, num_blocks[0], 1)
        self.layer2 = self._make_layer(16, num_blocks[1], 2)
        self.layer3 = self._make_layer(32, num_blocks[2], 2)
        self.linear = nn.Linear(32, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = colour_digits(16)
    mean, std = xtr.mean((0, 2, 3), keepdim=True), xtr.std((0, 2, 3), keepdim=True)
    return {
        "model": ResNet,
        "data": tensor_spec(
            (xtr - mean) / std, ytr, (xte - mean) / std, yte, "multiclass", 10, "image", 128
        ),
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        "loss": nn.CrossEntropyLoss(),
    }
