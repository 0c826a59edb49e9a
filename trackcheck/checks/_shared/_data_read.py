"""Both splits read once, example by example, for the checks that look at data only
(leakage, split_consistency): content hashes, targets, flattened inputs and per-channel
moments, all on the CPU and as the pipeline splits the batches (dict batches included).

The read is shared: the first data check of a stage pays for it, the next one finds it in a
cache keyed by the Context (dropped with it). A map-style split longer than ``max_examples``
is read as a seeded random subset of that many examples (dataset order can be sorted by
class, so its head would not be representative); an iterable one is read up to it.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset

from trackcheck.checks._shared import _streams
from trackcheck.context import Context
from trackcheck.core import SkipCheck
from trackcheck.pipeline import IGNORE_INDEX, primary

READ_BATCH = 512  # examples per read batch (one collate call)
# inputs wider than this many coordinates are not kept flattened (hashes and moments only):
# nearest neighbours and per-coordinate tests cost O(N x coordinates)
MAX_COORDS = 1024
# per-feature moments for at most this many features; wider inputs are pooled into one
MAX_FEATURES = 1024


@dataclass
class SplitData:
    """What was read of one split; N = examples read."""

    n_total: int | None  # len(dataset), None for an iterable dataset
    index: np.ndarray  # [N] dataset index of each row read
    hashes: np.ndarray  # [N] uint64 content hash over every input tensor of the example
    y: Tensor  # [N, ...] targets as the checks see them (CPU)
    flat: np.ndarray | None  # [N, P] float32 every input coordinate (None: wider than MAX)
    is_float: np.ndarray | None  # [P] bool, which coordinates come from float tensors
    coord_names: list[str]  # [P] "x17", "pixel_values[0, 3, 4]", feature names
    moments: tuple[np.ndarray, np.ndarray] | None  # [N, C] E[x], E[x^2] per channel/feature
    unit: str  # "channel" | "feature": what a column of ``moments`` is
    unit_names: list[str]


@dataclass
class Splits:
    train: SplitData
    test: SplitData


_CACHE: dict[int, tuple[int, Splits]] = {}


def read_splits(ctx: Context, max_examples: int) -> Splits:
    """Both splits of ``ctx.data`` (cached per Context and limit)."""
    hit = _CACHE.get(id(ctx))
    if hit is not None and hit[0] == max_examples:
        return hit[1]
    g = np.random.default_rng(ctx.seed + _streams.DATA_READ)
    train = _read(ctx, ctx.data.train, max_examples, g)
    test = _read(ctx, ctx.data.test, max_examples, g)
    out = Splits(train, test)
    if id(ctx) not in _CACHE:
        weakref.finalize(ctx, _CACHE.pop, id(ctx), None)
    _CACHE[id(ctx)] = (max_examples, out)
    return out


def _batches(
    ds: Dataset[Any], limit: int, collate: Any, g: np.random.Generator
) -> tuple[Any, np.ndarray, int | None]:
    """(an iterable of raw batches, [N] dataset indices, len) for at most ``limit`` examples."""
    try:
        total: int | None = len(ds)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if isinstance(ds, IterableDataset) or total is None:
        loader = DataLoader(ds, batch_size=READ_BATCH, collate_fn=collate)
        return loader, np.arange(limit), total
    idx = np.arange(total)
    if total > limit:
        idx = np.sort(g.choice(total, size=limit, replace=False))
    if isinstance(ds, TensorDataset) and collate is None:  # no per-item calls needed
        t = torch.from_numpy(idx)
        rows = (  # slices are views; a subset is gathered
            tuple(
                x[i : i + READ_BATCH] if total <= limit else x[t[i : i + READ_BATCH]]
                for x in ds.tensors
            )
            for i in range(0, len(t), READ_BATCH)
        )
        return rows, idx, total
    sub = ds if total <= limit else Subset(ds, idx.tolist())
    return DataLoader(sub, batch_size=READ_BATCH, collate_fn=collate), idx, total


def _read(ctx: Context, ds: Dataset[Any], limit: int, g: np.random.Generator) -> SplitData:
    batches, idx, total = _batches(ds, limit, ctx.data.collate_fn, g)
    hashes, ys, flats, a_s, b_s = [], [], [], [], []
    names: list[str] = []
    is_float = np.zeros(0, bool)
    unit, unit_names = "feature", []
    seen, keep = 0, False
    for raw in batches:
        b = ctx.pipeline.split(raw)
        n = min(len(b), limit - seen)
        tensors = [t[:n].detach().cpu() for t in _input_tensors(b.x)]
        if not tensors:
            raise SkipCheck(
                f"the dataset's batches hold no input tensors (inputs: {type(b.x).__name__}), "
                "so their content cannot be compared: set data.collate_fn to the collate "
                "that makes tensors (a tokenizer in a custom loader's collate, say)"
            )
        hashes.append(row_hashes(tensors))
        ys.append(b.y[:n].detach().cpu())
        if not seen:
            names, is_float = _coord_names(b.x, ctx)
            keep = len(names) <= MAX_COORDS  # else: too wide to keep flat; hashes only
        if keep:
            flats.append(torch.cat([t.reshape(n, -1).float() for t in tensors], 1).numpy())
            keep = flats[-1].shape[1] == len(names)  # padded per batch: widths differ
        m = _moments(primary(b.x)[:n].detach().cpu(), ctx.data.kind)
        if m is not None:
            a_s.append(m[0])
            b_s.append(m[1])
            unit, unit_names = m[2], m[3]
        seen += n
        if seen >= limit:
            break
    moments = None
    if a_s and len({a.shape[1] for a in a_s}) == 1:  # else: feature counts differ per batch
        moments = (np.concatenate(a_s), np.concatenate(b_s))
        fn = ctx.data.feature_names
        if unit == "feature" and fn and len(fn) == moments[0].shape[1]:
            unit_names = [str(s) for s in fn]
    return SplitData(
        n_total=total,
        index=idx[:seen],
        hashes=np.concatenate(hashes) if hashes else np.zeros(0, np.uint64),
        y=_cat_targets(ys),
        flat=np.concatenate(flats) if keep and flats else None,
        is_float=is_float if keep and flats else None,
        coord_names=names if keep else [],
        moments=moments,
        unit=unit,
        unit_names=unit_names,
    )


def _cat_targets(ys: list[Tensor]) -> Tensor:
    """[N, ...] the targets of all batches; token targets padded per batch (unequal lengths)
    are padded to the longest with the ignore index."""
    if not ys:
        return torch.zeros(0)
    if len({tuple(y.shape[1:]) for y in ys}) == 1:
        return torch.cat(ys)
    if all(y.dim() == 2 and not y.is_floating_point() for y in ys):
        t = max(y.shape[1] for y in ys)
        return torch.cat([F.pad(y, (0, t - y.shape[1]), value=IGNORE_INDEX) for y in ys])
    return torch.cat([y.reshape(-1) for y in ys])  # distributions only: no per-example rows


def _input_tensors(x: Any) -> list[Tensor]:
    """Every input tensor of a batch, in a fixed order (dict inputs: by key)."""
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, dict):
        return [x[k] for k in sorted(x) if isinstance(x[k], Tensor)]
    if isinstance(x, list | tuple):
        return [t for t in x if isinstance(t, Tensor)]
    return []


def _coord_names(x: Any, ctx: Context) -> tuple[list[str], np.ndarray]:
    """A name per flattened input coordinate, and which coordinates are float."""
    if isinstance(x, dict):
        named = [(str(k), x[k]) for k in sorted(x) if isinstance(x[k], Tensor)]
    else:
        named = [
            (f"x{i}" if len(_input_tensors(x)) > 1 else "x", t)
            for i, t in enumerate(_input_tensors(x))
        ]
    total = sum(int(np.prod(t.shape[1:])) for _, t in named)
    if total > MAX_COORDS:
        return [""] * total, np.zeros(total, bool)
    names, floats = [], []
    fn = ctx.data.feature_names
    for key, t in named:
        shape = tuple(t.shape[1:])
        k = int(np.prod(shape))
        if len(named) == 1 and len(shape) == 1 and fn and len(fn) == k:
            names += [str(s) for s in fn]
        else:
            names += [f"{key}[{', '.join(map(str, np.unravel_index(i, shape)))}]" for i in range(k)]
        floats += [t.is_floating_point()] * k
    return names, np.array(floats, bool)


def _moments(x: Tensor, kind: str) -> tuple[np.ndarray, np.ndarray, str, list[str]] | None:
    """[N, C] per-example mean and mean square of each channel (images [N, C, H, W]) or
    feature (flattened trailing dims); None for integer (token) inputs."""
    if not x.is_floating_point():
        return None
    v = _numpy(x).astype(np.float64)
    v = np.where(np.isfinite(v), v, np.nan)  # non-finite values: input_snapshot reports them
    if kind == "image" and v.ndim == 4:
        v, unit = v.reshape(v.shape[0], v.shape[1], -1), "channel"  # [N, C, H*W]
    else:
        v, unit = v.reshape(len(v), -1, 1), "feature"  # [N, D, 1]
        if v.shape[1] > MAX_FEATURES:
            v, unit = v.reshape(len(v), 1, -1), "input"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel: NaN, not judged
        a, b = np.nanmean(v, 2), np.nanmean(v * v, 2)  # NumPy: see _data_leaks._nearest
    return a, b, unit, [f"{unit} {i}" for i in range(a.shape[1])]


def _numpy(t: Tensor) -> np.ndarray:
    """A CPU tensor as NumPy (a view where it can be); half precision widened to float32.
    NumPy rather than torch for the arithmetic here: torch's thread pool stalls on a busy
    machine, where these small ops then cost 10x."""
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return t.numpy()


# --- content hashes ---------------------------------------------------------------------
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(v: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (a bijection that scrambles bits)."""
    v = v ^ (v >> np.uint64(30))
    v = v * _M1
    v = v ^ (v >> np.uint64(27))
    v = v * _M2
    return v ^ (v >> np.uint64(31))


def row_hashes(tensors: list[Tensor]) -> np.ndarray:
    """[N] uint64: one hash per example of the bytes of all its input tensors. Each 8-byte
    word is mixed with its tensor and position before the words are summed, so equal
    examples hash equally and different ones collide with probability ~2^-64 per pair.
    All-zero words add nothing: a sequence hashes the same whatever zero padding its batch
    gave it (a collate that pads to the batch's longest; attention_mask 0, pad id 0)."""
    n = len(tensors[0]) if tensors else 0
    total = np.zeros(n, np.uint64)
    for k, t in enumerate(tensors):
        arr = _numpy(t).reshape(n, -1)
        if t.is_floating_point():
            arr = arr + np.float32(0.0) if arr.dtype != np.float64 else arr + 0.0  # -0.0 -> 0.0
        rows = np.ascontiguousarray(arr).view(np.uint8).reshape(n, -1)
        pad = (-rows.shape[1]) % 8
        if pad:
            rows = np.concatenate([rows, np.zeros((n, pad), np.uint8)], 1)
        words = np.ascontiguousarray(rows).view(np.uint64)  # [N, W]
        salt = _mix(np.arange(words.shape[1], dtype=np.uint64) + np.uint64((k + 1) << 40))
        mixed = np.where(words != 0, _mix(words ^ salt), np.uint64(0))
        total += mixed.sum(1, dtype=np.uint64)
    return _mix(total)
