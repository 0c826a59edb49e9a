"""Hugging Face run_glue.py on a pretrained checkpoint: a BERT pretrained with masked-language
modelling, saved with ``save_pretrained``, reloaded by
``BertForSequenceClassification.from_pretrained`` (a new pooler and classifier), fine-tuned by
the Trainer on its own loss with AdamW at lr 2e-5, batch 32 (the README's command).

The pretraining (300 MLM steps, 15% of tokens masked, AdamW 1e-3) runs here, once per
process, into a temporary directory.
"""

from __future__ import annotations

import functools
import tempfile
from typing import Any

import torch

from ._hf import CLS, PAD, SEP, bert_config, sentiment, sentiment_spec

SOURCE = "https://github.com/huggingface/transformers/blob/main/examples/pytorch/text-classification/run_glue.py"
GLUE = ""
MASK = 3  # a sentiment id reused as [MASK]: the vocabulary is tiny


@functools.cache
def pretrained_dir() -> str:
    from transformers import BertForMaskedLM

    torch.manual_seed(2024)
    train, _ = sentiment()
    ids_all = train.columns["input_ids"]
    mlm = BertForMaskedLM(bert_config())
    opt = torch.optim.AdamW(mlm.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        ids = ids_all[torch.randint(len(ids_all), (32,), generator=g)].clone()
        special = (ids == PAD) | (ids == CLS) | (ids == SEP)
        chosen = (torch.rand(ids.shape, generator=g) < 0.15) & ~special
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        ids[chosen] = MASK
        loss = mlm(input_ids=ids, attention_mask=(ids != PAD).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tempfile.mkdtemp(prefix="corpus-bert-")
    mlm.save_pretrained(path)
    return path


def model() -> torch.nn.Module:
    from transformers.utils import logging

    logging.set_verbosity_error()  # "Some weights ... newly initialized": expected here
    logging.disable_progress_bar()  # a "Loading weights" bar per model built
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification.from_pretrained(pretrained_dir(), num_labels=2)


def program() -> dict[str, Any]:
    pretrained_dir()
    return {
        "model": model,
        "data": sentiment_spec(32, pairs=True),
        "optimizer": lambda p: torch.optim.AdamW(p, lr=2e-5, weight_decay=0.0),
        "loss": "model",
    }
