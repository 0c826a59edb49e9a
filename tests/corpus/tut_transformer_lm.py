"""PyTorch tutorials, "Language Modeling with nn.Transformer" (transformer_tutorial): Embedding
scaled by sqrt(d_model), PositionalEncoding, nn.TransformerEncoder with a causal mask, a Linear
head returning raw logits; sequence-first ([T, B]); nn.CrossEntropyLoss on the flattened
logits; SGD at lr 5.0 with the gradient norm clipped to 0.5, batch 20, bptt 35; embedding and
head uniform(-0.1, 0.1), head bias 0.

Tiny: d_model 32, 2 heads, d_hid 64, 2 layers; vocabulary 400 words of Python's help text.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._data import word_lm
from .pt_word_lm_transformer import PositionalEncoding

SOURCE = "https://github.com/pytorch/tutorials/blob/main/beginner_source/transformer_tutorial.py"
GLUE = (
    "sequence-first model: a wrapper transposes the [B, T] batch to [T, B] and the [T, B, V] "
    "output back to [B, T, V]."
)


class TransformerModel(nn.Module):
    def __init__(
        self,
        ntoken: int,
        d_model: int = 32,
        nhead: int = 2,
        d_hid: int = 64,
        nlayers: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.pos_encoder = PositionalEncoding(d_model, dropout)
        layer = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout)
        self.transformer_encoder = nn.TransformerEncoder(layer, nlayers)
        self.embedding = nn.Embedding(ntoken, d_model)
        self.d_model = d_model
        self.linear = nn.Linear(d_model, ntoken)
        initrange = 0.1
        self.embedding.weight.data.uniform_(-initrange, initrange)
        self.linear.bias.data.zero_()
        self.linear.weight.data.uniform_(-initrange, initrange)

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        src = self.embedding(src) * math.sqrt(self.d_model)  # [T, B, d]
        src = self.pos_encoder(src)
        if src_mask is None:
            src_mask = nn.Transformer.generate_square_subsequent_mask(len(src)).to(src.device)
        output = self.transformer_encoder(src, src_mask)
        return self.linear(output)  # [T, B, V]


class BatchFirst(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.t()).transpose(0, 1)


criterion = nn.CrossEntropyLoss()


def flat_ce(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return criterion(output.reshape(-1, output.shape[-1]), targets.reshape(-1))


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    data, targets = batch
    loss = flat_ce(model(data), targets)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    optimizer.step()
    return loss


def program() -> dict[str, Any]:
    data = word_lm(seq_len=35, batch=20)
    return {
        "model": lambda: BatchFirst(TransformerModel(len(data.itos or []))),
        "data": data,
        "optimizer": lambda p: torch.optim.SGD(p, lr=5.0),
        "loss": flat_ce,
        "step": train_step,
    }
