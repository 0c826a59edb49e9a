"""PyTorch tutorials, "Transfer learning" (ConvNet as fixed feature extractor): the reloaded
net's parameters set ``requires_grad = False``, a new last layer, only its parameters given to
SGD at lr 0.001, momentum 0.9, batch 4, nn.CrossEntropyLoss.

As pre_new_head: trained on the digits 0-5, a new 4-way head for the digits 6-9.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._data import tensor_spec
from .pre_new_head import new_task
from .pre_resume import checkpoint
from .tut_cifar import Net

SOURCE = "https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html"
GLUE = ""


def frozen_model() -> nn.Module:
    net = Net()
    net.fc3 = nn.Linear(84, 6)
    net.load_state_dict(torch.load(checkpoint(6), weights_only=True))
    for param in net.parameters():
        param.requires_grad = False
    net.fc3 = nn.Linear(84, 4)  # new parameters require grad
    return net


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = new_task()
    return {
        "model": frozen_model,
        "data": tensor_spec(xtr, ytr, xte, yte, "multiclass", 4, "image", 4),
        "optimizer": lambda p: torch.optim.SGD(
            [q for q in p if q.requires_grad], lr=0.001, momentum=0.9
        ),
        "loss": nn.CrossEntropyLoss(),
    }
