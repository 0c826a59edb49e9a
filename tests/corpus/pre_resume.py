"""PyTorch tutorials, "Saving and loading models" on the CIFAR-10 tutorial's net: trained,
saved with ``torch.save(net.state_dict(), PATH)``, reloaded with ``load_state_dict`` and
trained on at its own settings (SGD lr 0.001, momentum 0.9, batch 4, CrossEntropyLoss).

The first training (two epochs) happens here, once per process, into a temporary file.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._data import colour_digits, tensor_spec
from .tut_cifar import Net

SOURCE = "https://pytorch.org/tutorials/beginner/saving_loading_models.html"
GLUE = ""


def train(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float = 0.001,
    batch: int = 4,
    seed: int = 0,
) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            crit(net(x[idx]), y[idx]).backward()
            opt.step()
    return net


@functools.cache
def checkpoint(classes: int = 10) -> Path:
    """A CIFAR tutorial net trained on the digits of classes < ``classes``, saved."""
    xtr, ytr, _, _ = colour_digits(32)
    keep = ytr < classes
    torch.manual_seed(1000 + classes)
    net = Net()
    if classes != 10:
        net.fc3 = nn.Linear(84, classes)
    train(net, (xtr[keep] - 0.5) / 0.5, ytr[keep], epochs=2)
    path = Path(tempfile.mkdtemp(prefix="corpus-ckpt-")) / f"cifar_net_{classes}.pth"
    torch.save(net.state_dict(), path)
    return path


def reloaded() -> nn.Module:
    net = Net()
    net.load_state_dict(torch.load(checkpoint(), weights_only=True))
    return net


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = colour_digits(32)
    return {
        "model": reloaded,
        "data": tensor_spec(
            (xtr - 0.5) / 0.5, ytr, (xte - 0.5) / 0.5, yte, "multiclass", 10, "image", 4
        ),
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.001, momentum=0.9),
        "loss": nn.CrossEntropyLoss(),
    }
