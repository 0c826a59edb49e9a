"""Correct programs re-implemented from public examples, tiny, for the no-false-alarm tests.

Each keeps what its original does that trackcheck must read right: where the bias sits, how
the loss reduces, what shape the output has, how the batch is laid out.

- ``D2LResNet``: Dive into Deep Learning's ``Residual`` block (chapter "ResNet"): 3x3 convs
  WITH their default bias, each followed by BatchNorm2d (a conv bias before BatchNorm has no
  effect on the output in train mode: the batch mean removes it).
- ``CharRNN`` + ``summed_nll`` + ``clipped_step``: the char-RNN of PyTorch's "NLP From
  Scratch: Generating Names" tutorial reduced to its loss: the per-sequence NLL is SUMMED
  over the positions, and the step clips the gradient norm.
- ``Regressor1`` + ``squeezed_mse``: a regression net whose head is ``Linear(h, 1)``
  (``[B, 1]`` output) trained with a loss that squeezes it first, ``mse(out.squeeze(-1), y)``
  against ``[B]`` targets (the pattern of many tabular tutorials).
- ``TextClassifier`` + ``collate_offsets``: PyTorch's "Text classification with the
  torchtext library" tutorial: ``nn.EmbeddingBag`` over a flat tensor of every token in the
  batch plus the offsets where each example starts; the collate returns (text, offsets,
  label) (the tutorial returns the label first; trackcheck reads the target last).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from trackcheck import DataSpec
from trackcheck.tasks import make_task


class Residual(nn.Module):
    """d2l.ai's Residual: conv(bias) -> BN -> ReLU -> conv(bias) -> BN, plus the shortcut."""

    def __init__(self, c_in: int, c_out: int, use_1x1conv: bool = False, strides: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv3 = nn.Conv2d(c_in, c_out, 1, stride=strides) if use_1x1conv else None
        self.bn1, self.bn2 = nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(y + x)


class D2LResNet(nn.Module):
    """A two-stage d2l-style ResNet for 1-channel 8x8 images: stem conv(bias)+BN, two
    residual stages, global average pool, Linear."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            Residual(width, width),
            Residual(width, 2 * width, use_1x1conv=True, strides=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # [B, num_classes]


def d2l_resnet18(num_classes: int = 10, width: int = 8) -> nn.Sequential:
    """d2l.ai's ResNet-18 (a conv(bias)+BN stem, four stages of two Residual blocks, the
    width doubling and the map halving from stage 2 on), at a small width for 8x8 inputs."""
    layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    c = width
    for i in range(4):
        out = width * 2**i
        for j in range(2):
            first = j == 0 and i > 0
            layers.append(Residual(c, out, use_1x1conv=c != out, strides=2 if first else 1))
            c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


class CharRNN(nn.Module):
    """Embedding -> GRU -> Linear -> log_softmax, per position: [B, T] ids -> [B, T, V]."""

    def __init__(self, vocab: int, hidden: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.rnn = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.rnn(self.emb(x))
        return F.log_softmax(self.out(h), dim=-1)


def summed_nll(out: Tensor, y: Tensor) -> Tensor:
    """The tutorial's loss: NLL summed over the positions of a sequence (``loss +=
    criterion(output, target[i])`` per position), and, batched, over the sequences too.
    out [B, T, V] log-probabilities, y [B, T]."""
    return F.nll_loss(out.transpose(1, 2), y, reduction="sum")


def clipped_step(model: nn.Module, batch: Any, opt: torch.optim.Optimizer) -> Tensor:
    """The tutorial's training step: the summed loss, backward, clip the norm at 1, step."""
    x, y = batch
    opt.zero_grad()
    loss = summed_nll(model(x), y)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.detach()


class Regressor1(nn.Module):
    """MLP with a Linear(h, 1) head: [B, d] -> [B, 1]."""

    def __init__(self, d: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def squeezed_mse(out: Tensor, y: Tensor) -> Tensor:
    """The loss squeezes the [B, 1] output to [B] before comparing with [B] targets."""
    return F.mse_loss(out.squeeze(-1), y)


class TextClassifier(nn.Module):
    """The tutorial's TextClassificationModel: EmbeddingBag (mean) -> Linear."""

    def __init__(self, vocab: int, embed_dim: int, num_class: int) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab, embed_dim)
        self.fc = nn.Linear(embed_dim, num_class)
        self.embedding.weight.data.uniform_(-0.5, 0.5)  # the tutorial's init_weights
        self.fc.weight.data.uniform_(-0.5, 0.5)
        self.fc.bias.data.zero_()

    def forward(self, text: Tensor, offsets: Tensor) -> Tensor:
        return self.fc(self.embedding(text, offsets))


def collate_offsets(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """The tutorial's collate_batch: every example's tokens concatenated into one flat tensor,
    the offset where each starts, the labels. Returns (text [N_tokens], offsets [B], y [B])."""
    texts = [t[t >= 0] for t, _ in items]  # -1 pads the stored rows to one length
    offsets = torch.tensor([0] + [len(t) for t in texts[:-1]]).cumsum(0)
    return torch.cat(texts), offsets, torch.stack([y for _, y in items])


def offsets_text_data(n: int = 600, vocab: int = 50, seed: int = 0) -> DataSpec:
    """Variable-length token sequences whose class is set by which block of the vocabulary
    their tokens mostly come from; stored padded with -1, collated flat with offsets."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    lengths = torch.randint(4, 12, (n,), generator=g)
    rows = torch.full((n, 12), -1, dtype=torch.long)
    block = vocab // 4
    for i in range(n):
        k = int(lengths[i])
        own = torch.randint(0, block, (k,), generator=g) + int(y[i]) * block
        noise = torch.randint(0, vocab, (k,), generator=g)
        rows[i, :k] = torch.where(torch.rand(k, generator=g) < 0.6, own, noise)
    cut = n * 3 // 4
    return DataSpec(
        train=TensorDataset(rows[:cut], y[:cut]),
        test=TensorDataset(rows[cut:], y[cut:]),
        task=make_task("multiclass", 4),
        kind="tokens",
        batch_size=32,
        collate_fn=collate_offsets,
    )


def regression_data(n: int = 512, d: int = 8, seed: int = 0) -> DataSpec:
    """y = a smooth function of x plus noise, [N] float targets."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    y = torch.tanh(x @ w / 2) * 3 + 0.1 * torch.randn(n, generator=g)
    cut = n * 3 // 4
    return DataSpec(
        train=TensorDataset(x[:cut], y[:cut]),
        test=TensorDataset(x[cut:], y[cut:]),
        task=make_task("regression", 1),
        kind="tabular",
        batch_size=32,
    )
