"""pytorch/examples siamese_network/main.py: a ResNet-18 trunk (1-channel conv1, no fc) embeds
each image of a pair, the two embeddings concatenated go through Linear, ReLU, Linear(., 1)
and a sigmoid; nn.BCELoss on ``outputs.squeeze()``, Adadelta at lr 1.0, batch 64; Linear
layers xavier-uniform with bias 0.01; target 1 when the two digits are the same class.

Tiny: the trunk is a ResNet stem and one BasicBlock of 8 channels (torchvision does not
import here), fc 16 wide, 16x16 digits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._data import digits, mnist_normalize, tensor_spec

SOURCE = "https://github.com/pytorch/examples/blob/main/siamese_network/main.py"
GLUE = ""


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class SiameseNetwork(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
            BasicBlock(8),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.fc = nn.Sequential(nn.Linear(8 * 2, 16), nn.ReLU(inplace=True), nn.Linear(16, 1))
        self.sigmoid = nn.Sigmoid()
        self.resnet.apply(self.init_weights)
        self.fc.apply(self.init_weights)

    @staticmethod
    def init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            m.bias.data.fill_(0.01)

    def forward_once(self, x: torch.Tensor) -> torch.Tensor:
        output = self.resnet(x)
        return output.view(output.size()[0], -1)

    def forward(self, input1: torch.Tensor, input2: torch.Tensor) -> torch.Tensor:
        output = torch.cat((self.forward_once(input1), self.forward_once(input2)), 1)
        return self.sigmoid(self.fc(output))


criterion = nn.BCELoss()


def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return criterion(outputs.squeeze(), targets)


def pairs(
    x: torch.Tensor, y: torch.Tensor, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Each image with a partner: half the time one of its class, else one of another."""
    g = torch.Generator().manual_seed(seed)
    same = torch.rand(len(x), generator=g) < 0.5
    partner = torch.empty(len(x), dtype=torch.long)
    for i in range(len(x)):
        pool = torch.nonzero((y == y[i]) if same[i] else (y != y[i])).squeeze(1)
        partner[i] = pool[torch.randint(len(pool), (1,), generator=g)]
    return (x, x[partner]), same.float()


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = digits(16)
    xtr, xte = mnist_normalize(xtr), mnist_normalize(xte)
    (a, b), t = pairs(xtr, ytr, 1)
    (c, d), u = pairs(xte, yte, 2)
    return {
        "model": SiameseNetwork,
        "data": tensor_spec((a, b), t, (c, d), u, "binary", 1, "image", 64),
        "optimizer": lambda p: torch.optim.Adadelta(p, lr=1.0),
        "loss": loss,
    }
