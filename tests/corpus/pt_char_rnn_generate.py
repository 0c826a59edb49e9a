"""PyTorch tutorials, "Generating Names with a Character-Level RNN": an RNN cell fed (category
one-hot, letter one-hot, hidden): i2h and i2o Linear on their concatenation, o2o Linear on
(hidden, output), dropout 0.1, LogSoftmax over 58 symbols (57 letters + EOS); nn.NLLLoss
summed over the name's letters; plain SGD at lr 0.0005 (the tutorial updates ``p.data`` by
hand), one name per step (batch 1).

Tiny: hidden 32, four made-up "languages". Names are padded to one length so that several
can be stacked; targets past the end are -100 (ignored) and the loss sums the valid letters
of each name, then averages over names (the tutorial's loss at batch 1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import ALL_LETTERS, names, one_hot_line, tensor_spec

SOURCE = "https://github.com/pytorch/tutorials/blob/main/intermediate_source/char_rnn_generation_tutorial.py"
GLUE = "names of unequal length padded to one length (targets -100) so that batches can be stacked"
N_LETTERS = len(ALL_LETTERS) + 1  # plus EOS
N_CATEGORIES = 4


class RNN(nn.Module):
    def __init__(
        self, input_size: int = N_LETTERS, hidden_size: int = 32, output_size: int = N_LETTERS
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(N_CATEGORIES + input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(N_CATEGORIES + input_size + hidden_size, output_size)
        self.o2o = nn.Linear(hidden_size + output_size, output_size)
        self.dropout = nn.Dropout(0.1)
        self.softmax = nn.LogSoftmax(dim=1)

    def step(
        self, category: torch.Tensor, input: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        input_combined = torch.cat((category, input, hidden), 1)
        hidden = self.i2h(input_combined)
        output = self.i2o(input_combined)
        output = self.o2o(torch.cat((hidden, output), 1))
        output = self.softmax(self.dropout(output))
        return output, hidden

    def forward(self, category: torch.Tensor, line: torch.Tensor) -> torch.Tensor:
        # category [B, 4], line [B, L, 58] one-hot letters -> [B, L, 58] log-probabilities
        hidden = line.new_zeros(line.shape[0], self.hidden_size)
        outs = []
        for i in range(line.shape[1]):
            output, hidden = self.step(category, line[:, i], hidden)
            outs.append(output)
        return torch.stack(outs, 1)


def name_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The tutorial's sum of NLLLoss over the letters, averaged over the names of a batch."""
    per_letter = F.nll_loss(output.transpose(1, 2), target, reduction="none")  # [B, L], 0 at -100
    return per_letter.sum(1).mean()


def program() -> dict[str, Any]:
    ns, ys = names()
    length = max(len(n) for n in ns)
    lines = torch.stack([F.pad(one_hot_line(n, length), (0, 1)) for n in ns])  # [N, L, 58]
    target = torch.full((len(ns), length), -100)
    for i, n in enumerate(ns):  # targetTensor: letters 1.. then EOS
        ids = [ALL_LETTERS.find(c) for c in n[1:]] + [N_LETTERS - 1]
        target[i, : len(ids)] = torch.tensor(ids)
    cat = F.one_hot(torch.tensor(ys), N_CATEGORIES).float()
    cut = int(0.85 * len(ns))
    return {
        "model": RNN,
        "data": tensor_spec(
            (cat[:cut], lines[:cut]),
            target[:cut],
            (cat[cut:], lines[cut:]),
            target[cut:],
            "lm",
            N_LETTERS,
            "tokens",
            1,
        ),
        "optimizer": lambda p: torch.optim.SGD(p, lr=0.0005),
        "loss": name_loss,
    }
