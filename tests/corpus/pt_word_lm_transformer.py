"""pytorch/examples word_language_model (--model Transformer --lr 5, its README's command):
Embedding scaled by sqrt(ninp), sinusoidal PositionalEncoding with dropout, a
TransformerEncoder with a causal square-subsequent mask, a Linear decoder and log_softmax;
sequence-first ([T, B]); nn.NLLLoss on [T*B, V]; plain SGD at lr 5 with the gradient norm
clipped to 0.25, batch 20, bptt 35; encoder/decoder uniform(-0.1, 0.1), decoder bias 0.

Tiny: ninp 32, 2 heads, nhid 64, 2 layers, vocabulary 400 words of Python's help text.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import word_lm
from .pt_word_lm_lstm import flat_nll, train_step

SOURCE = "https://github.com/pytorch/examples/tree/main/word_language_model"
GLUE = (
    "sequence-first model: a wrapper transposes the [B, T] batch to [T, B] and the [T*B, V] "
    "output back to [B, T, V]."
)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0).transpose(0, 1))  # [max_len, 1, d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[: x.size(0), :])


class TransformerModel(nn.Transformer):
    def __init__(
        self,
        ntoken: int,
        ninp: int = 32,
        nhead: int = 2,
        nhid: int = 64,
        nlayers: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(
            d_model=ninp, nhead=nhead, dim_feedforward=nhid, num_encoder_layers=nlayers
        )
        self.src_mask: torch.Tensor | None = None
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        self.input_emb = nn.Embedding(ntoken, ninp)
        self.ninp = ninp
        self.decoder = nn.Linear(ninp, ntoken)
        initrange = 0.1
        nn.init.uniform_(self.input_emb.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, src: torch.Tensor, has_mask: bool = True) -> torch.Tensor:  # type: ignore[override]
        if has_mask:
            if self.src_mask is None or self.src_mask.size(0) != len(src):
                self.src_mask = nn.Transformer.generate_square_subsequent_mask(len(src)).to(
                    src.device
                )
        else:
            self.src_mask = None
        src = self.input_emb(src) * math.sqrt(self.ninp)
        src = self.pos_encoder(src)
        output = self.encoder(src, mask=self.src_mask)
        output = self.decoder(output)
        return F.log_softmax(output, dim=-1)  # [T, B, V]


class BatchFirst(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.t()).transpose(0, 1)


def program() -> dict[str, Any]:
    data = word_lm(seq_len=35, batch=20)
    return {
        "model": lambda: BatchFirst(TransformerModel(len(data.itos or []))),
        "data": data,
        "optimizer": lambda p: torch.optim.SGD(p, lr=5),
        "loss": flat_nll,
        "step": train_step,
    }
