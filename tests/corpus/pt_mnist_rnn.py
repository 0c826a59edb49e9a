"""pytorch/examples mnist_rnn/main.py: an LSTM reads the image row by row (batch_first), the
last step goes through BatchNorm1d, dropout and two linear layers into log_softmax;
F.nll_loss, Adadelta at lr 0.1, batch 64.

Tiny: 16x16 digits (16 rows of 16), hidden 32, fc 16 (the original: 28x28, 64, 32).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import digits, mnist_normalize, tensor_spec

SOURCE = "https://github.com/pytorch/examples/blob/main/mnist_rnn/main.py"
GLUE = ""


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(input_size=16, hidden_size=32, batch_first=True)
        self.batchnorm = nn.BatchNorm1d(32)
        self.dropout1 = nn.Dropout2d(0.25)
        self.dropout2 = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 16, 16)  # [B, rows, cols]
        output, _ = self.rnn(x)
        output = output[:, -1, :]  # the last row's hidden state
        output = self.batchnorm(output)
        output = self.dropout1(output)
        output = F.relu(self.fc1(output))
        output = self.dropout2(output)
        return F.log_softmax(self.fc2(output), dim=1)


def program() -> dict[str, Any]:
    xtr, ytr, xte, yte = digits(16)
    data = tensor_spec(
        mnist_normalize(xtr), ytr, mnist_normalize(xte), yte, "multiclass", 10, "image", 64
    )
    return {
        "model": Net,
        "data": data,
        "optimizer": lambda p: torch.optim.Adadelta(p, lr=0.1),
        "loss": F.nll_loss,
    }
