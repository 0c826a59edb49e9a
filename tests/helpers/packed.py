"""A packed-sequence classifier as PyTorch's char-RNN name-classification tutorial builds it:
padded one-hot sequences [B, L, V] and their lengths [B] as a tuple batch (x, lengths, y),
``pack_padded_sequence`` before an ``nn.RNN``; the class is readable from the first symbol."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from trackcheck import DataSpec, from_datasets


class PackedRNN(nn.Module):
    def __init__(self, vocab: int = 6, hidden: int = 16, classes: int = 3, mix: bool = False):
        super().__init__()
        self.rnn, self.head, self.mix = nn.RNN(vocab, hidden), nn.Linear(hidden, classes), mix

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x [B, L, V] padded one-hot; lengths [B]
        packed = pack_padded_sequence(x.transpose(0, 1), lengths.cpu(), enforce_sorted=False)
        _, hidden = self.rnn(packed)  # [1, B, H]: each sequence's state after its last symbol
        h = hidden[0]
        if self.mix:  # planted bug: a batch statistic in forward
            h = h - h.mean(0, keepdim=True)
        return self.head(h)


def packed_data(n: int = 480, vocab: int = 6, max_len: int = 7, classes: int = 3) -> DataSpec:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, max_len + 1, (n,), generator=g)
    ids = torch.randint(0, vocab, (n, max_len), generator=g)
    y = ids[:, 0] % classes  # the class is the first symbol's, mod the class count
    pad = torch.arange(max_len) >= lengths[:, None]  # [n, L]
    x = nn.functional.one_hot(ids, vocab).float().masked_fill(pad[..., None], 0.0)
    cut = n * 3 // 4
    tr = torch.utils.data.TensorDataset(x[:cut], lengths[:cut], y[:cut])
    te = torch.utils.data.TensorDataset(x[cut:], lengths[cut:], y[cut:])
    return from_datasets(tr, te, "multiclass", classes, kind="tabular", batch_size=32)
