"""Hugging Face examples, language-modeling/run_clm.py: GPT2LMHeadModel trained by the Trainer
on its own loss (labels = input_ids, shifted inside the model), texts grouped into blocks;
AdamW at the Trainer's default lr 5e-5, batch 8 (per_device_train_batch_size's default).

Tiny: a 2-layer, 32-wide GPT-2 from a config with random init, blocks of 32 words of Python's
help text (vocabulary 400).
"""

from __future__ import annotations

from typing import Any

import torch

from trackcheck import from_datasets

from ._hf import gpt2_config, word_blocks

SOURCE = "https://github.com/huggingface/transformers/blob/main/examples/pytorch/language-modeling/run_clm.py"
GLUE = ""


def model() -> torch.nn.Module:
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(gpt2_config())


def program() -> dict[str, Any]:
    train, test = word_blocks()
    return {
        "model": model,
        "data": from_datasets(
            train, test, "lm", gpt2_config().vocab_size, kind="tokens", batch_size=8
        ),
        "optimizer": lambda p: torch.optim.AdamW(p, lr=5e-5, weight_decay=0.0),
        "loss": "model",
    }
