"""Hugging Face examples, text-classification/run_glue.py with distilbert-base-uncased:
DistilBertForSequenceClassification (pre_classifier, ReLU, dropout 0.2, classifier) trained
by the Trainer on its own loss; AdamW at the Trainer's default lr 5e-5, batch 8.

Tiny: a 2-layer, 32-wide DistilBERT from a config with random init; SST-2-like items.
"""

from __future__ import annotations

from typing import Any

import torch

from ._hf import PAD, VOCAB, sentiment_spec

SOURCE = "https://github.com/huggingface/transformers/blob/main/examples/pytorch/text-classification/run_glue.py"
GLUE = ""


def model() -> torch.nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = DistilBertConfig(
        vocab_size=VOCAB,
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=32,
        pad_token_id=PAD,
        num_labels=2,
    )
    return DistilBertForSequenceClassification(cfg)


def program() -> dict[str, Any]:
    return {
        "model": model,
        "data": sentiment_spec(8),
        "optimizer": lambda p: torch.optim.AdamW(p, lr=5e-5, weight_decay=0.0),
        "loss": "model",
    }
