"""pytorch/examples time_sequence_prediction: two LSTMCells (1 -> 51 -> 51) and a Linear to the
next value of a sine wave, in double precision; nn.MSELoss; LBFGS at lr 0.8 with a closure,
the whole training set (97 waves) as one batch.

Tiny: hidden 16, waves of 10 steps, 48 train and 12 test waves (batch 48).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._data import tensor_spec

SOURCE = "https://github.com/pytorch/examples/tree/main/time_sequence_prediction"
GLUE = ""
H = 16


class Sequence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm1 = nn.LSTMCell(1, H)
        self.lstm2 = nn.LSTMCell(H, H)
        self.linear = nn.Linear(H, 1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # input [B, T] -> [B, T]: the prediction of each next value
        outputs = []
        h_t = torch.zeros(input.size(0), H, dtype=input.dtype, device=input.device)
        c_t = torch.zeros_like(h_t)
        h_t2, c_t2 = torch.zeros_like(h_t), torch.zeros_like(h_t)
        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            outputs += [self.linear(h_t2)]
        return torch.cat(outputs, dim=1)


criterion = nn.MSELoss()


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    input, target = batch

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = criterion(model(input), target)
        loss.backward()
        return loss

    return optimizer.step(closure)  # type: ignore[no-any-return]


def program() -> dict[str, Any]:
    # generate_sine_wave.py: x = arange(L) + randint(-4T, 4T), data = sin(x / T)
    T, L, N = 20, 11, 60
    g = torch.Generator().manual_seed(2)
    x = torch.arange(L).unsqueeze(0) + torch.randint(-4 * T, 4 * T, (N, 1), generator=g)
    data = torch.sin(x / 1.0 / T).double()
    inp, tgt = data[:, :-1], data[:, 1:]
    return {
        "model": lambda: Sequence().double(),
        "data": tensor_spec(inp[12:], tgt[12:], inp[:12], tgt[:12], "regression", 1, "tabular", 48),
        "optimizer": lambda p: torch.optim.LBFGS(p, lr=0.8),
        "loss": criterion,
        "step": train_step,
    }
