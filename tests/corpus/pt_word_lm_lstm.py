"""pytorch/examples word_language_model (--model LSTM): Embedding, a 2-layer LSTM with dropout
0.2, a Linear decoder and log_softmax over the vocabulary; sequence-first ([T, B]) inputs and
a hidden state; nn.NLLLoss on the flattened [T*B, V] output; plain SGD at lr 20 with the
gradient norm clipped to 0.25, batch 20, bptt 35; encoder and decoder initialised
uniform(-0.1, 0.1), decoder bias 0.

Tiny: embedding and hidden 32, vocabulary 400 words of Python's help text.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import word_lm

SOURCE = "https://github.com/pytorch/examples/tree/main/word_language_model"
GLUE = (
    "sequence-first model: a wrapper transposes the [B, T] batch to [T, B], builds the zero "
    "hidden state the training loop would carry, and turns the [T*B, V] output back into "
    "[B, T, V]; the hidden state carried between batches (truncated BPTT) cannot be expressed."
)


class RNNModel(nn.Module):
    def __init__(
        self,
        ntoken: int,
        ninp: int = 32,
        nhid: int = 32,
        nlayers: int = 2,
        dropout: float = 0.2,
        rnn_type: str = "LSTM",
    ) -> None:
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.rnn_type, self.nhid, self.nlayers = rnn_type, nhid, nlayers
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input: torch.Tensor, hidden: Any) -> tuple[torch.Tensor, Any]:
        emb = self.drop(self.encoder(input))  # [T, B, ninp]
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)  # [T*B, V]
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int) -> Any:
        w = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (
                w.new_zeros(self.nlayers, bsz, self.nhid),
                w.new_zeros(self.nlayers, bsz, self.nhid),
            )
        return w.new_zeros(self.nlayers, bsz, self.nhid)


class BatchFirst(nn.Module):
    """Glue: [B, T] in, [B, T, V] out, for a model that reads [T, B] and returns [T*B, V]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape
        out, _ = self.model(x.t(), self.model.init_hidden(b))
        return out.view(t, b, -1).transpose(0, 1)


criterion = nn.NLLLoss()


def flat_nll(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return criterion(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    data, targets = batch
    model.zero_grad()
    loss = flat_nll(model(data), targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    optimizer.step()  # SGD at lr 20: the original's p.data.add_(p.grad, alpha=-lr)
    return loss


def program() -> dict[str, Any]:
    data = word_lm(seq_len=35, batch=20)
    return {
        "model": lambda: BatchFirst(RNNModel(len(data.itos or []))),
        "data": data,
        "optimizer": lambda p: torch.optim.SGD(p, lr=20),
        "loss": flat_nll,
        "step": train_step,
    }
