"""Small local data of the kinds the corpus programs' originals train on (nothing downloaded).

Images: scikit-learn's 8x8 digits, upsampled to the size an original expects (MNIST 28x28,
CIFAR 32x32x3) and normalised as the original's transform does. Text: words from the help
topics that ship with Python (``pydoc_data``), synthetic names of a few "languages",
synthetic topic sentences. Every builder is cached: the programs are called once per seed.
"""

from __future__ import annotations

import functools
import random
import re
import string
from typing import Any

import torch
import torch.nn.functional as F
from helpers.hf_models import DictItems  # noqa: F401  (the corpus's Hugging Face items)
from torch import Tensor
from torch.utils.data import TensorDataset

from trackcheck import DataSpec, from_datasets
from trackcheck.data.text import CharWindows


# --- images -----------------------------------------------------------------------------------
@functools.cache
def digits(size: int = 28) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test): digits in [0, 1] as [N, 1, size, size], 80/20 split
    after a fixed shuffle (the same for every program)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    x = torch.tensor(X, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    x, labels = x[perm], labels[perm]
    cut = int(0.8 * len(x))
    return x[:cut], labels[:cut], x[cut:], labels[cut:]


def mnist_normalize(x: Tensor) -> Tensor:
    """transforms.Normalize((0.1307,), (0.3081,)): MNIST's mean and std, as the examples use."""
    return (x - 0.1307) / 0.3081


@functools.cache
def colour_digits(size: int = 32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CIFAR-like: digits as 3-channel images, each tinted by a random colour and put on a
    noisy background; in [0, 1] as [N, 3, size, size]."""
    xtr, ytr, xte, yte = digits(size)
    g = torch.Generator().manual_seed(99)

    def tint(x: Tensor) -> Tensor:
        colour = torch.rand(len(x), 3, 1, 1, generator=g) * 0.7 + 0.3
        bg = torch.rand(len(x), 3, 1, 1, generator=g) * 0.3
        noise = torch.rand(len(x), 3, size, size, generator=g) * 0.1
        return (x * colour + (1 - x) * bg + noise).clamp(0, 1)

    return tint(xtr), ytr, tint(xte), yte


def tensor_spec(
    xtr: Any, ytr: Tensor, xte: Any, yte: Tensor, task: str, n_out: int, kind: str, batch: int
) -> DataSpec:
    """A DataSpec over TensorDatasets; ``xtr``/``xte`` may be a tuple of several inputs."""
    xs_tr = xtr if isinstance(xtr, tuple) else (xtr,)
    xs_te = xte if isinstance(xte, tuple) else (xte,)
    return from_datasets(
        TensorDataset(*xs_tr, ytr),
        TensorDataset(*xs_te, yte),
        task,
        n_out,
        kind=kind,
        batch_size=batch,
    )


# --- text -------------------------------------------------------------------------------------
@functools.cache
def words(max_words: int = 60_000, vocab: int = 400) -> tuple[list[str], Tensor]:
    """(itos, ids): a word stream from Python's help topics, lower-cased, lines ended by
    <eos> (as word_language_model's Corpus does), the ``vocab`` commonest words kept and the
    rest <unk>."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics))
    toks: list[str] = []
    for line in text.splitlines():
        ws = re.findall(r"[a-z]+", line.lower())
        if ws:
            toks += ws + ["<eos>"]
        if len(toks) >= max_words:
            break
    counts: dict[str, int] = {}
    for t in toks:
        counts[t] = counts.get(t, 0) + 1
    keep = sorted(counts, key=lambda w: (-counts[w], w))[: vocab - 1]
    itos = ["<unk>", *keep]
    stoi = {w: i for i, w in enumerate(itos)}
    return itos, torch.tensor([stoi.get(t, 0) for t in toks], dtype=torch.long)


def word_lm(seq_len: int, batch: int, max_words: int = 12_000) -> DataSpec:
    """Word-level next-token windows ([T] each; the loader stacks them batch-first)."""
    itos, ids = words()
    ids = ids[:max_words]
    cut = int(0.9 * len(ids))
    spec = from_datasets(
        CharWindows(ids[:cut], seq_len),
        CharWindows(ids[cut:], seq_len),
        "lm",
        len(itos),
        kind="tokens",
        batch_size=batch,
    )
    spec.itos = itos
    return spec


ALL_LETTERS = string.ascii_letters + " .,;'"  # the names tutorials' alphabet (57 symbols)
# syllables of four made-up "languages": names of one language share its sounds
SYLLABLES = {
    "Arvian": ["ar", "va", "ri", "an", "os", "el", "tor"],
    "Bekish": ["bek", "ka", "zu", "ish", "mo", "dr", "ek"],
    "Colune": ["co", "lu", "ne", "sse", "ette", "ou", "ier"],
    "Dunmar": ["dun", "mac", "gh", "ail", "ach", "son", "mor"],
}


@functools.cache
def names(n: int = 1200, seed: int = 7) -> tuple[list[str], list[int]]:
    """(names, language ids): 2-4 syllables of one language, capitalised."""
    rng = random.Random(seed)
    langs = list(SYLLABLES)
    out, ys = [], []
    for _ in range(n):
        c = rng.randrange(len(langs))
        s = "".join(rng.choice(SYLLABLES[langs[c]]) for _ in range(rng.randint(2, 4)))
        out.append(s.capitalize())
        ys.append(c)
    return out, ys


def one_hot_line(name: str, length: int) -> Tensor:
    """[length, 57] one-hot letters (the tutorials' lineToTensor), zero rows after the end."""
    t = torch.zeros(length, len(ALL_LETTERS))
    for i, ch in enumerate(name):
        t[i, ALL_LETTERS.find(ch)] = 1
    return t


TOPICS = {
    "world": "government minister election war country president border treaty army vote",
    "sports": "game team season coach player score league match win cup",
    "business": "market company shares profit bank price growth trade stock deal",
    "scitech": "software computer internet space research phone data chip science web",
}
COMMON = "the a of in to and on for with at by from says new after over its as is".split()


@functools.cache
def news(n: int = 1600, seed: int = 11) -> tuple[list[list[str]], list[int]]:
    """AG_NEWS-like short headlines: 6-20 words, a third of them from the class's topic."""
    rng = random.Random(seed)
    topic_words = {k: v.split() for k, v in TOPICS.items()}
    classes = list(TOPICS)
    docs, ys = [], []
    for _ in range(n):
        c = rng.randrange(len(classes))
        length = rng.randint(6, 20)
        doc = [
            rng.choice(topic_words[classes[c]]) if rng.random() < 0.35 else rng.choice(COMMON)
            for _ in range(length)
        ]
        docs.append(doc)
        ys.append(c)
    return docs, ys
