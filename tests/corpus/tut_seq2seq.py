"""PyTorch tutorials, "NLP From Scratch: Translation with a Sequence to Sequence Network and
Attention": EncoderRNN (Embedding, dropout 0.1, GRU batch_first) and AttnDecoderRNN (Bahdanau
attention, GRU, Linear, log_softmax) decoding with teacher forcing from the target tensor;
nn.NLLLoss on the flattened [B*T, V] output against the zero-padded targets; Adam at lr 0.001
(one for the encoder, one for the decoder), batch 32.

Tiny: hidden 32; a made-up "translation" (each source word mapped to a target word, the order
reversed), sentences of 2-8 words plus EOS, padded with 0 to MAX_LENGTH 10.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._data import tensor_spec

SOURCE = "https://github.com/pytorch/tutorials/blob/main/intermediate_source/seq2seq_translation_tutorial.py"
GLUE = "encoder and decoder wrapped in one module (the tutorial keeps two, each with its own Adam)"
SOS_token, EOS_token = 0, 1
MAX_LENGTH = 10
V_IN, V_OUT = 24, 24


class EncoderRNN(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, dropout_p: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.dropout(self.embedding(input))
        return self.gru(embedded)


class BahdanauAttention(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.Wa = nn.Linear(hidden_size, hidden_size)
        self.Ua = nn.Linear(hidden_size, hidden_size)
        self.Va = nn.Linear(hidden_size, 1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
        scores = scores.squeeze(2).unsqueeze(1)
        weights = F.softmax(scores, dim=-1)
        return torch.bmm(weights, keys), weights


class AttnDecoderRNN(nn.Module):
    def __init__(self, hidden_size: int, output_size: int, dropout_p: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.attention = BahdanauAttention(hidden_size)
        self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)
        self.dropout = nn.Dropout(dropout_p)

    def forward(
        self,
        encoder_outputs: torch.Tensor,
        encoder_hidden: torch.Tensor,
        target_tensor: torch.Tensor,
    ) -> torch.Tensor:
        batch_size = encoder_outputs.size(0)
        decoder_input = torch.full(
            (batch_size, 1), SOS_token, dtype=torch.long, device=encoder_outputs.device
        )
        decoder_hidden = encoder_hidden
        decoder_outputs = []
        for i in range(MAX_LENGTH):
            decoder_output, decoder_hidden = self.forward_step(
                decoder_input, decoder_hidden, encoder_outputs
            )
            decoder_outputs.append(decoder_output)
            decoder_input = target_tensor[:, i].unsqueeze(1)  # teacher forcing
        decoder_outputs = torch.cat(decoder_outputs, dim=1)
        return F.log_softmax(decoder_outputs, dim=-1)

    def forward_step(
        self, input: torch.Tensor, hidden: torch.Tensor, encoder_outputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.dropout(self.embedding(input))
        query = hidden.permute(1, 0, 2)
        context, _ = self.attention(query, encoder_outputs)
        output, hidden = self.gru(torch.cat((embedded, context), dim=2), hidden)
        return self.out(output), hidden


class Seq2Seq(nn.Module):
    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.encoder = EncoderRNN(V_IN, hidden)
        self.decoder = AttnDecoderRNN(hidden, V_OUT)

    def forward(self, input_tensor: torch.Tensor, target_tensor: torch.Tensor) -> torch.Tensor:
        encoder_outputs, encoder_hidden = self.encoder(input_tensor)
        return self.decoder(encoder_outputs, encoder_hidden, target_tensor)


criterion = nn.NLLLoss()


def loss(decoder_outputs: torch.Tensor, target_tensor: torch.Tensor) -> torch.Tensor:
    return criterion(decoder_outputs.view(-1, decoder_outputs.size(-1)), target_tensor.view(-1))


def pairs(n: int = 720, seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mapping = torch.randperm(V_OUT - 2, generator=g) + 2
    src = torch.zeros(n, MAX_LENGTH, dtype=torch.long)
    tgt = torch.zeros(n, MAX_LENGTH, dtype=torch.long)
    for i in range(n):
        k = int(torch.randint(2, MAX_LENGTH - 1, (1,), generator=g))
        words = torch.randint(2, V_IN, (k,), generator=g)
        src[i, :k], src[i, k] = words, EOS_token
        tgt[i, :k], tgt[i, k] = mapping[words - 2].flip(0), EOS_token
    return src, tgt


def program() -> dict[str, Any]:
    src, tgt = pairs()
    cut = 600
    return {
        "model": Seq2Seq,
        "data": tensor_spec(
            (src[:cut], tgt[:cut]),
            tgt[:cut],
            (src[cut:], tgt[cut:]),
            tgt[cut:],
            "lm",
            V_OUT,
            "tokens",
            32,
        ),
        "optimizer": lambda p: torch.optim.Adam(p, lr=0.001),
        "loss": loss,
    }
