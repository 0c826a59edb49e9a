"""Hugging Face examples, text-classification/run_glue.py with BERT: BertForSequenceClassification
trained by the Trainer on the model's own loss (labels=), AdamW at lr 2e-5 (the README's
command), batch 32; sentence-pair inputs (input_ids, token_type_ids, attention_mask).

Tiny: a 2-layer, 32-wide BERT from a config with random init; SST-2-like synthetic items.
"""

from __future__ import annotations

from typing import Any

import torch

from ._hf import bert_config, sentiment_spec

SOURCE = "https://github.com/huggingface/transformers/blob/main/examples/pytorch/text-classification/run_glue.py"
GLUE = ""


def model() -> torch.nn.Module:
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification(bert_config(num_labels=2))


def program() -> dict[str, Any]:
    return {
        "model": model,
        "data": sentiment_spec(32, pairs=True),
        "optimizer": lambda p: torch.optim.AdamW(p, lr=2e-5, weight_decay=0.0),
        "loss": "model",
    }
