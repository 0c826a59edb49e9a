"""pytorch/examples mnist/main.py: a two-conv net ending in log_softmax, trained with
F.nll_loss by Adadelta at lr 1.0, batch 64, on MNIST normalised by (0.1307, 0.3081).

Tiny: 16x16 digits, 8 and 16 channels, fc 32 (the original: 28x28, 32/64 channels, fc 128).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import digits, mnist_normalize, tensor_spec

SOURCE = "https://github.com/pytorch/examples/blob/main/mnist/main.py"
GLUE = ""


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(16 * 6 * 6, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # [B, 8, 14, 14]
        x = F.relu(self.conv2(x))  # [B, 16, 12, 12]
        x = F.max_pool2d(x, 2)  # [B, 16, 6, 6]
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = digits(16)
    data = tensor_spec(
        mnist_normalize(xtr), ytr, mnist_normalize(xte), yte, "multiclass", 10, "image", 64
    )
    return {
        "model": Net,
        "data": data,
        "optimizer": lambda p: torch.optim.Adadelta(p, lr=1.0),
        "loss": F.nll_loss,
    }
