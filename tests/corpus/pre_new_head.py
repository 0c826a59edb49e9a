"""PyTorch tutorials, "Transfer learning" (finetuning the ConvNet): a net trained on one task,
saved with ``state_dict``, reloaded, its last layer replaced by a new Linear for the new
classes, and the whole net fine-tuned with SGD at lr 0.001, momentum 0.9, batch 4,
nn.CrossEntropyLoss.

Here the CIFAR tutorial's net is trained on the digits 0-5 (a 6-way head), saved, reloaded,
and given a new 4-way head for the digits 6-9.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._data import colour_digits, tensor_spec
from .pre_resume import checkpoint
from .tut_cifar import Net

SOURCE = "https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html"
GLUE = ""


def finetune_model() -> nn.Module:
    net = Net()
    net.fc3 = nn.Linear(84, 6)
    net.load_state_dict(torch.load(checkpoint(6), weights_only=True))
    net.fc3 = nn.Linear(84, 4)  # the new head
    return net


def new_task() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    xtr, ytr, xte, yte = colour_digits(32)
    tr, te = ytr >= 6, yte >= 6
    return (xtr[tr] - 0.5) / 0.5, ytr[tr] - 6, (xte[te] - 0.5) / 0.5, yte[te] - 6


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = new_task()
    return {
        "model": finetune_model,
        "data": tensor_spec(xtr, ytr, xte, yte, "multiclass", 4, "image", 4),
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.001, momentum=0.9),
        "loss": nn.CrossEntropyLoss(),
    }
