"""Tokenised data in the Hugging Face convention (one dict per item), and tiny configs."""

from __future__ import annotations

import functools
from typing import Any

import torch

from trackcheck import DataSpec, from_datasets

from ._data import DictItems

PAD, CLS, SEP = 0, 1, 2
VOCAB = 64
POS_WORDS = range(3, 8)  # "great", "fine", ...
NEG_WORDS = range(8, 13)  # "awful", "dull", ...
FILLER = 13  # ids 13..VOCAB-1


@functools.cache
def sentiment(
    n: int = 480, seq_len: int = 24, seed: int = 3, pairs: bool = False
) -> tuple[Any, Any]:
    """SST-2-like items: [CLS] words [SEP], right-padded, 1-3 sentiment words of one polarity
    among fillers; label 1 for positive. ``pairs``: a second segment (token_type_ids 1) of
    fillers, as GLUE's sentence-pair tasks have."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n, seq_len), PAD)
    types = torch.zeros(n, seq_len, dtype=torch.long)
    labels = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        length = int(torch.randint(6, seq_len - 8 if pairs else seq_len - 1, (1,), generator=g))
        words = torch.randint(FILLER, VOCAB, (length,), generator=g)
        k = int(torch.randint(1, 4, (1,), generator=g))
        where = torch.randperm(length, generator=g)[:k]
        lo = POS_WORDS.start if labels[i] == 1 else NEG_WORDS.start
        words[where] = torch.randint(lo, lo + 5, (k,), generator=g)
        row = [CLS, *words.tolist(), SEP]
        if pairs:
            second = torch.randint(
                FILLER, VOCAB, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g
            ).tolist()
            types[i, len(row) : len(row) + len(second) + 1] = 1
            row += [*second, SEP]
        ids[i, : len(row)] = torch.tensor(row)
    mask = (ids != PAD).long()
    cut = n * 3 // 4
    cols = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if pairs:
        cols["token_type_ids"] = types
    train = DictItems(**{k: v[:cut] for k, v in cols.items()})
    test = DictItems(**{k: v[cut:] for k, v in cols.items()})
    return train, test


def sentiment_spec(batch: int, pairs: bool = False) -> DataSpec:
    train, test = sentiment(pairs=pairs)
    return from_datasets(train, test, "multiclass", 2, kind="tokens", batch_size=batch)


def bert_config(**kw: Any) -> Any:
    from transformers import BertConfig

    base: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 32,
        "pad_token_id": PAD,
    }
    return BertConfig(**{**base, **kw})


def word_blocks(block: int = 32, max_words: int = 9_000) -> tuple[Any, Any]:
    """run_clm's group_texts: the token stream cut into blocks; labels = input_ids (the
    model shifts them), attention_mask all ones."""
    from ._data import words

    _, ids = words()
    ids = ids[:max_words]
    n = len(ids) // block
    blocks = ids[: n * block].view(n, block)
    cut = int(0.9 * n)

    def items(b: torch.Tensor) -> DictItems:
        return DictItems(input_ids=b, attention_mask=torch.ones_like(b), labels=b.clone())

    return items(blocks[:cut]), items(blocks[cut:])


def gpt2_config(**kw: Any) -> Any:
    from transformers import GPT2Config

    from ._data import words

    base: dict[str, Any] = {
        "vocab_size": len(words()[0]),
        "n_positions": 32,
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 2,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    return GPT2Config(**{**base, **kw})
