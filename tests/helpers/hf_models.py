"""Tiny third-party models and the datasets they are fed, for tests/test_third_party.py.

Hugging Face transformers models are built from configs with random init (nothing is
downloaded); each is a few layers of small width so the whole checklist runs in seconds on
CPU. The datasets return one dict per item, the Hugging Face convention, so the default
collate gives dict batches ({"input_ids", "attention_mask", "labels"} or {"pixel_values",
"labels"}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from trackcheck import DataSpec, from_datasets
from trackcheck.data import digits, text_corpus
from trackcheck.data.text import VOCAB

Factory = Callable[[], nn.Module]


# --- datasets ----------------------------------------------------------------------------
class DictItems(Dataset[dict[str, Tensor]]):
    """Rows of equally long tensors, one dict per item: {key: tensor[i]}."""

    def __init__(self, **columns: Tensor) -> None:
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return {k: v[i] for k, v in self.columns.items()}


def lm_dicts(
    seq_len: int = 32, max_chars: int = 40_000, pad_every: int = 4, padding_side: str = "right"
) -> DataSpec:
    """The shipped character corpus as Hugging Face causal-LM items: input_ids, an
    attention_mask and labels = input_ids (the model shifts them). Every ``pad_every``-th
    window is cut 2 to 8 tokens short and padded (pad id 0, mask 0, label -100) on
    ``padding_side``, as a collator pads a batch of unequal texts."""
    base = text_corpus(seq_len=seq_len, max_chars=max_chars)

    def convert(ds: Any) -> DictItems:
        ids = torch.stack([ds[i][0] for i in range(len(ds))])  # [N, T]
        n_valid = torch.full((len(ids),), seq_len)
        n_valid[::pad_every] -= 2 * (1 + torch.arange(len(ids))[::pad_every] % 4)
        pos = torch.arange(seq_len)
        valid = pos < n_valid[:, None]  # right padding: [N, T]
        if padding_side == "left":  # the same tokens, moved to the end of the window
            valid = pos >= (seq_len - n_valid)[:, None]
            shifts = (seq_len - n_valid).tolist()
            ids = torch.stack([row.roll(k) for row, k in zip(ids, shifts, strict=True)])
        mask = valid.long()
        ids = ids.masked_fill(~valid, 0)
        return DictItems(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(~valid, -100))

    spec = from_datasets(
        convert(base.train), convert(base.test), "lm", len(VOCAB), kind="tokens", batch_size=32
    )
    spec.itos = list(VOCAB)
    return spec


def marker_sequences(
    n: int = 768, seq_len: int = 16, vocab: int = 32, classes: int = 4, seed: int = 0
) -> DataSpec:
    """Token sequences of unequal length (6 to seq_len, right-padded with id 0 and an
    attention_mask) holding exactly one marker token (ids 1..classes) somewhere: the label is
    which marker. Filler ids are classes+1..vocab-1. Learnable by attention in tens of steps."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, seq_len + 1, (n,), generator=g)
    ids = torch.randint(classes + 1, vocab, (n, seq_len), generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    where = (torch.rand(n, generator=g) * lengths).long()  # a valid position of each row
    ids[torch.arange(n), where] = labels + 1
    mask = (torch.arange(seq_len) < lengths[:, None]).long()  # [N, T]
    ids = ids.masked_fill(mask == 0, 0)
    cut = n * 3 // 4
    items = [
        DictItems(input_ids=ids[s], attention_mask=mask[s], labels=labels[s])
        for s in (slice(0, cut), slice(cut, n))
    ]
    spec = from_datasets(items[0], items[1], "multiclass", classes, kind="tokens", batch_size=32)
    spec.itos = (
        ["<pad>"]
        + [f"<m{c}>" for c in range(classes)]
        + [chr(ord("a") + i % 26) for i in range(vocab - classes - 1)]
    )
    return spec


def digit_pixels(size: int = 16, channels: int = 1) -> DataSpec:
    """The shipped digits (standardised) as {"pixel_values", "labels"} items, upsampled
    bilinearly to ``size`` x ``size`` and repeated over ``channels``."""
    base = digits()

    def convert(ds: Any) -> DictItems:
        x, y = ds.tensors
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return DictItems(pixel_values=x.repeat(1, channels, 1, 1).contiguous(), labels=y)

    spec = from_datasets(
        convert(base.train), convert(base.test), "multiclass", 10, kind="image", batch_size=64
    )
    spec.class_names = base.class_names
    return spec


# --- Hugging Face models ------------------------------------------------------------------
def gpt2(n_positions: int = 32, vocab: int = len(VOCAB), n_layer: int = 2) -> nn.Module:
    """GPT-2 with its LM head tied to the token embedding (no bias), ids 0..vocab-1."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=vocab,
        n_positions=n_positions,
        n_embd=32,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(cfg)


def bert_lm(n_positions: int = 32, vocab: int = len(VOCAB)) -> nn.Module:
    """Planted bug for causality: a bidirectional encoder (BERT's masked-LM head) used as a
    next-token model; every output sees the whole sequence."""
    from transformers import BertForMaskedLM

    return BertForMaskedLM(_bert_config(vocab, n_positions))


def _bert_config(vocab: int, n_positions: int, **kw: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=n_positions,
        pad_token_id=0,
        **kw,
    )


def bert_classifier(classes: int = 4, vocab: int = 32, n_positions: int = 16) -> nn.Module:
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification(_bert_config(vocab, n_positions, num_labels=classes))


def vit(size: int = 16, channels: int = 1) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        image_size=size,
        patch_size=4,
        num_channels=channels,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=10,
    )
    return ViTForImageClassification(cfg)


def resnet(channels: int = 1) -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(
        num_channels=channels,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=10,
    )
    return ResNetForImageClassification(cfg)


def convnext(channels: int = 1) -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(
        num_channels=channels,
        patch_size=2,
        num_stages=2,
        hidden_sizes=[16, 32],
        depths=[1, 1],
        num_labels=10,
    )
    return ConvNextForImageClassification(cfg)


def mobilenet(size: int = 16, channels: int = 1) -> nn.Module:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    cfg = MobileNetV2Config(
        num_channels=channels,
        image_size=size,
        depth_multiplier=0.25,
        finegrained_output=False,
        num_labels=10,
    )
    return MobileNetV2ForImageClassification(cfg)


# --- user-style torch models ----------------------------------------------------------------
class NestedNet(nn.Module):
    """A user's own model: nested nn.Sequential blocks, tuple batches, a tensor output."""

    def __init__(self, d_in: int = 64, classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(),
            nn.Sequential(nn.Linear(d_in, width), nn.ReLU()),
            nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU()),
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class DictOut(NestedNet):
    """The same, returning {"logits": ...} the way many research codebases do."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        return {"logits": super().forward(x), "features": self.features(x)}


class Unreadable(NestedNet):
    """Planted bug: the output is a string-keyed dict with no logits and two tensors."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        h = self.features(x)
        return {"hidden": h, "scores": self.head(h)}
