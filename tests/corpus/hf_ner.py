"""Hugging Face examples, token-classification/run_ner.py: BertForTokenClassification (logits
[B, T, C]) trained by the Trainer on its own loss, labels -100 on [CLS], [SEP] and padding;
AdamW at lr 5e-5, batch 8 (the Trainer's defaults).

Tiny: a 2-layer, 32-wide BERT from a config; synthetic sentences where person-name tokens
(ids 3-12) and place tokens (13-22) are tagged B-/I-PER and B-/I-LOC among fillers.
"""

from __future__ import annotations

from typing import Any

import torch

from trackcheck import from_datasets

from ._data import DictItems
from ._hf import CLS, PAD, SEP, VOCAB, bert_config

SOURCE = "https://github.com/huggingface/transformers/blob/main/examples/pytorch/token-classification/run_ner.py"
GLUE = ""
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def sentences(n: int = 480, seq_len: int = 24, seed: int = 5) -> tuple[DictItems, DictItems]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, seq_len), PAD)
    labels = torch.full((n, seq_len), -100)
    for i in range(n):
        toks, tags = [], []
        while len(toks) < int(torch.randint(6, seq_len - 4, (1,), generator=g)):
            r = float(torch.rand(1, generator=g))
            if r < 0.15:  # a person: 1-2 tokens
                k = int(torch.randint(1, 3, (1,), generator=g))
                toks += torch.randint(3, 13, (k,), generator=g).tolist()
                tags += [1] + [2] * (k - 1)
            elif r < 0.25:  # a place: 1-2 tokens
                k = int(torch.randint(1, 3, (1,), generator=g))
                toks += torch.randint(13, 23, (k,), generator=g).tolist()
                tags += [3] + [4] * (k - 1)
            else:
                toks.append(int(torch.randint(23, VOCAB, (1,), generator=g)))
                tags.append(0)
        row = [CLS, *toks, SEP]
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, 1 : 1 + len(tags)] = torch.tensor(tags)
    mask = (ids != PAD).long()
    cut = n * 3 // 4
    cols = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return (
        DictItems(**{k: v[:cut] for k, v in cols.items()}),
        DictItems(**{k: v[cut:] for k, v in cols.items()}),
    )


def model() -> torch.nn.Module:
    from transformers import BertForTokenClassification

    return BertForTokenClassification(bert_config(num_labels=len(LABELS)))


def program() -> dict[str, Any]:
    train, test = sentences()
    return {
        "model": model,
        "data": from_datasets(train, test, "token", len(LABELS), kind="tokens", batch_size=8),
        "optimizer": lambda p: torch.optim.AdamW(p, lr=5e-5, weight_decay=0.0),
        "loss": "model",
    }
