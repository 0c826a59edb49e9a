"""Hugging Face run_clm.py on a pretrained checkpoint: a GPT-2 trained, saved with
``save_pretrained``, reloaded by ``GPT2LMHeadModel.from_pretrained`` as is and trained on on
text of the same kind by the Trainer on its own loss, AdamW at lr 5e-5, batch 8.

The pretraining (400 steps of AdamW 1e-3 on the same kind of text) runs here, once per
process, into a temporary directory.
"""

from __future__ import annotations

import functools
import tempfile
from typing import Any

import torch

from trackcheck import from_datasets

from ._hf import gpt2_config, word_blocks

SOURCE = "https://github.com/huggingface/transformers/blob/main/examples/pytorch/language-modeling/run_clm.py"
GLUE = ""


@functools.cache
def pretrained_dir() -> str:
    from transformers import GPT2LMHeadModel

    torch.manual_seed(2025)
    train, _ = word_blocks()
    ids_all = train.columns["input_ids"]
    lm = GPT2LMHeadModel(gpt2_config())
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(2)
    for _ in range(400):
        ids = ids_all[torch.randint(len(ids_all), (16,), generator=g)]
        loss = lm(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tempfile.mkdtemp(prefix="corpus-gpt2-")
    lm.save_pretrained(path)
    return path


def model() -> torch.nn.Module:
    from transformers.utils import logging

    logging.set_verbosity_error()  # "Some weights ... newly initialized": expected here
    logging.disable_progress_bar()  # a "Loading weights" bar per model built
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(pretrained_dir())


def program() -> dict[str, Any]:
    pretrained_dir()
    train, test = word_blocks()
    return {
        "model": model,
        "data": from_datasets(
            train, test, "lm", gpt2_config().vocab_size, kind="tokens", batch_size=8
        ),
        "optimizer": lambda p: torch.optim.AdamW(p, lr=5e-5, weight_decay=0.0),
        "loss": "model",
    }
