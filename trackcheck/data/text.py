"""A character-level corpus from English text that ships with every Python: its help topics."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from trackcheck.data.spec import DataSpec
from trackcheck.tasks import make_task

# printable ASCII plus newline: a fixed vocabulary, so model configs can interpolate its size
VOCAB = ["\n"] + [chr(c) for c in range(32, 127)]
UNKNOWN = "?"


def _corpus(max_chars: int) -> str:
    try:
        from pydoc_data.topics import topics  # the text behind help('keywords') etc.

        text = "\n".join(topics[k] for k in sorted(topics))
    except ImportError:  # some minimal Python builds drop pydoc_data: use builtins' docstrings
        import builtins

        docs = (getattr(builtins, n).__doc__ for n in sorted(dir(builtins)))
        text = "\n".join(d for d in docs if d)
    return text[:max_chars]


class CharWindows(Dataset[tuple[Tensor, Tensor]]):
    """Non-overlapping windows: x = ids[i : i+T], y = ids[i+1 : i+T+1]."""

    def __init__(self, ids: Tensor, seq_len: int) -> None:
        self.ids, self.seq_len = ids, seq_len

    def __len__(self) -> int:
        return (len(self.ids) - 1) // self.seq_len

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = i * self.seq_len
        chunk = self.ids[s : s + self.seq_len + 1]
        return chunk[:-1], chunk[1:]


def text_corpus(
    seq_len: int = 64,
    batch_size: int = 32,
    max_chars: int = 200_000,
    test_fraction: float = 0.1,
    num_outputs: int | None = len(VOCAB),
    input_shape: list[int] | None = None,
) -> DataSpec:
    """Python's help-topic text, as next-character prediction over a 96-symbol vocabulary."""
    if num_outputs is not None and num_outputs != len(VOCAB):
        raise ValueError(
            f"text corpus has {len(VOCAB)} symbols, config says num_outputs={num_outputs}"
        )
    stoi = {ch: i for i, ch in enumerate(VOCAB)}
    unk = stoi[UNKNOWN]
    text = _corpus(max_chars)
    ids = torch.tensor([stoi.get(ch, unk) for ch in text], dtype=torch.long)
    cut = int(len(ids) * (1 - test_fraction))  # split by position: test text is unseen text
    return DataSpec(
        train=CharWindows(ids[:cut], seq_len),
        test=CharWindows(ids[cut:], seq_len),
        task=make_task("lm", len(VOCAB)),
        kind="tokens",
        batch_size=batch_size,
        itos=list(VOCAB),
        info={"input_shape": [seq_len], "chars": len(text)},
    )
