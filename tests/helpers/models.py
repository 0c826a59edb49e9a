"""Tiny models for the tests: correct ones, and ones with a planted bug each."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.data import TensorDataset

from trackcheck import DataSpec
from trackcheck.models import MLP


def scaled_head(factory, factor: float = 10.0):  # type: ignore[no-untyped-def]
    """Planted bug: the final layer's weights scaled up (outputs far too large at init)."""

    def build() -> nn.Module:
        model = factory()
        with torch.no_grad():
            model.head.weight.mul_(factor)
        return model

    return build


class SoftmaxBeforeCE(MLP):
    """Planted bug: probabilities returned where CrossEntropyLoss expects logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(-1)


class DetachedBody(MLP):
    """Planted bug: the hidden layers are cut off from the graph; only the head learns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).detach())


def _conv_bn(c_in: int, c_out: int, k: int, groups: int = 1, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, momentum=0.01),  # torchvision MobileNetV3's momentum
    ]
    return [*layers, nn.Hardswish()] if act else layers


class SlowBatchNormNet(nn.Module):
    """A correct MobileNetV3-style net for digits 8x8 at BatchNorm momentum 0.01: a 3x3 stem,
    an inverted bottleneck (1x1 expand, 3x3 depthwise, 1x1 project), a 1x1 conv, global
    average pool, Linear. After a few dozen steps its running statistics still hold most of
    their initial (0, 1): eval mode computes another network than the trained one.

    (A single Conv-BN-ReLU-pool-Linear keeps enough of its signal in eval mode to pass the
    checks anyway: the stale statistics must compound over several layers to do harm, as in
    MobileNetV3.)"""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        e = 4 * width
        self.features = nn.Sequential(
            *_conv_bn(1, width, 3),
            *_conv_bn(width, e, 1),
            *_conv_bn(e, e, 3, groups=e),
            *_conv_bn(e, width, 1, act=False),
            *_conv_bn(width, 6 * width, 1),
        )
        self.head = nn.Linear(6 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))  # [B, 6W, 8, 8] -> [B, 10]


class ConvBN(nn.Module):
    """A correct small CNN with BatchNorm for digits 8x8: two Conv-BN-ReLU, average pool,
    Linear ([B, 1, 8, 8] -> [B, 10])."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class GRUClassifier(nn.Module):
    """A correct GRU classifier reading 8 features as 4 steps of 2 ([B, 8] -> [B, 4, 2] ->
    the last hidden state -> [B, classes])."""

    def __init__(self, classes: int = 4, hidden: int = 16) -> None:
        super().__init__()
        self.rnn = nn.GRU(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x.reshape(len(x), 4, 2))
        return self.head(h[:, -1])


class ColumnHead(nn.Module):
    """A correct regression MLP whose output keeps its column: [B, 8] -> [B, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Ratio(nn.Module):
    """x / x[:, :1]: divides by the first feature, zero for some inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x[:, :1]


class DividesByFeature(nn.Module):
    """Planted bug: a division by an input feature that is 0 for one example."""

    def __init__(self) -> None:
        super().__init__()
        self.ratio = Ratio()
        self.mlp = MLP([8], 4, width=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ratio(x))


def with_input(data: DataSpec, index: int, value: float, feature: int = 0) -> DataSpec:
    """The training set with input ``feature`` of example ``index`` set to ``value``."""
    x, y = (t.clone() for t in data.train.tensors)  # type: ignore[attr-defined]
    x[index, feature] = value
    return dataclasses.replace(data, train=TensorDataset(x, y))


class Stack(nn.Module):
    """``depth`` Linear layers of ``width`` with activation ``act`` between, then a head."""

    def __init__(self, act: type[nn.Module], depth: int = 12, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = 8
        for _ in range(depth):
            layers += [nn.Linear(d, width), act()]
            d = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
