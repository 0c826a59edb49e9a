"""PyTorch tutorials, "Text classification with the torchtext library": nn.EmbeddingBag (mean of
a bag of tokens, no padding: the batch is the tokens of all texts flattened plus each text's
offset) and a Linear head; weights uniform(-0.5, 0.5), bias 0; nn.CrossEntropyLoss; SGD at lr
5 with the gradient norm clipped to 0.1; batch 64; collate_batch yields (label, text, offsets).

Tiny: embedding 16; AG_NEWS-like synthetic headlines over 4 topics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from trackcheck import from_datasets

from ._data import COMMON, TOPICS, news

SOURCE = "https://github.com/pytorch/tutorials/blob/main/beginner_source/text_sentiment_ngrams_tutorial.py"
GLUE = "the batch is (text, offsets, label): label moved last, the order trackcheck reads"
VOCAB = sorted({w for v in TOPICS.values() for w in v.split()} | set(COMMON))


class TextClassificationModel(nn.Module):
    def __init__(
        self, vocab_size: int = len(VOCAB), embed_dim: int = 16, num_class: int = 4
    ) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=False)
        self.fc = nn.Linear(embed_dim, num_class)
        initrange = 0.5
        self.embedding.weight.data.uniform_(-initrange, initrange)
        self.fc.weight.data.uniform_(-initrange, initrange)
        self.fc.bias.data.zero_()

    def forward(self, text: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(text, offsets))


class Headlines(Dataset[tuple[int, list[int]]]):
    def __init__(self, docs: list[list[str]], labels: list[int]) -> None:
        stoi = {w: i for i, w in enumerate(VOCAB)}
        self.items = [(y, [stoi[w] for w in d]) for d, y in zip(docs, labels, strict=True)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, list[int]]:
        return self.items[i]


def collate_batch(
    batch: list[tuple[int, list[int]]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    label_list, text_list, offsets = [], [], [0]
    for label, ids in batch:
        label_list.append(label)
        processed = torch.tensor(ids, dtype=torch.int64)
        text_list.append(processed)
        offsets.append(processed.size(0))
    labels = torch.tensor(label_list, dtype=torch.int64)
    offs = torch.tensor(offsets[:-1]).cumsum(dim=0)
    return torch.cat(text_list), offs, labels


criterion = nn.CrossEntropyLoss()


def train_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    text, offsets, label = batch
    optimizer.zero_grad()
    loss = criterion(model(text, offsets), label)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    optimizer.step()
    return loss


def program() -> dict[str, Any]:
    docs, ys = news()
    cut = int(0.8 * len(docs))
    return {
        "model": TextClassificationModel,
        "data": from_datasets(
            Headlines(docs[:cut], ys[:cut]),
            Headlines(docs[cut:], ys[cut:]),
            "multiclass",
            4,
            kind="tokens",
            batch_size=64,
            collate_fn=collate_batch,
        ),
        "optimizer": lambda p: torch.optim.SGD(p, lr=5),
        "loss": criterion,
        "step": train_step,
    }
