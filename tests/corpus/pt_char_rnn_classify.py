"""PyTorch tutorials, "Classifying Names with a Character-Level RNN" (the current version):
CharRNN = nn.RNN(57, hidden) over one-hot letters (sequence-first), h2o Linear on the last
hidden state, LogSoftmax; nn.NLLLoss averaged over a batch of 64 names, each run at its own
length; SGD at lr 0.15, gradient norm clipped to 3.

Tiny: hidden 32; four made-up "languages" stand in for the 18 of the tutorial's name files.
The batch is run at once with packed sequences (each name still at its own length).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from ._data import ALL_LETTERS, names, one_hot_line, tensor_spec

SOURCE = "https://github.com/pytorch/tutorials/blob/main/intermediate_source/char_rnn_classification_tutorial.py"
GLUE = ""


class CharRNN(nn.Module):
    def __init__(
        self, input_size: int = len(ALL_LETTERS), hidden_size: int = 32, output_size: int = 4
    ) -> None:
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, line_tensor: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # line_tensor [B, L, 57] padded one-hot names; lengths [B]
        packed = pack_padded_sequence(
            line_tensor.transpose(0, 1), lengths.cpu(), enforce_sorted=False
        )
        _, hidden = self.rnn(packed)  # [1, B, H]: each name's state after its last letter
        return self.softmax(self.h2o(hidden[0]))


criterion = nn.NLLLoss()


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    x, lengths, y = batch
    loss = criterion(model(x, lengths), y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 3)
    optimizer.step()
    optimizer.zero_grad()
    return loss


def program() -> dict[str, Any]:
    ns, ys = names()
    length = max(len(n) for n in ns)
    x = torch.stack([one_hot_line(n, length) for n in ns])
    lengths = torch.tensor([len(n) for n in ns])
    y = torch.tensor(ys)
    cut = int(0.85 * len(ns))  # the tutorial's 85/15 split
    return {
        "model": CharRNN,
        "data": tensor_spec(
            (x[:cut], lengths[:cut]),
            y[:cut],
            (x[cut:], lengths[cut:]),
            y[cut:],
            "multiclass",
            4,
            "tokens",
            64,
        ),
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.15),
        "loss": criterion,
        "step": train_step,
    }
