"""The contract check's batch probes: a training batch from the real loader has
data.batch_size rows, aligned inputs and targets, and distinct examples (against the share of
repeated items the dataset itself holds)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.utils.data import default_collate

from trackcheck.checks._shared._fingerprint import fingerprint, row_fingerprints
from trackcheck.checks.contract._contract_findings import Findings, Thresholds, map_tensors
from trackcheck.context import Context
from trackcheck.data.spec import length_of
from trackcheck.pipeline import Batch, primary


def check_batches(ctx: Context, f: Findings, p: Thresholds, seed_offset: int) -> None:
    """A training batch from the real loader (the stream ``seed_offset``): data.batch_size
    rows, distinct examples."""
    b = next(ctx.train_batches(seed_offset=seed_offset))
    n = len(b)
    rows = int(primary(b.x).shape[0])
    f.metrics["train_batch_size"] = float(n)
    if rows != n:
        f.fail(
            f"a training batch has {rows} input rows and {n} targets: the collate_fn "
            "misaligns inputs and targets"
        )
    _check_batch_size(ctx, n, f)
    _check_duplicates(ctx, b, f, p)


def _check_batch_size(ctx: Context, n: int, f: Findings) -> None:
    """The first batch has data.batch_size rows (the dataset has that many items): fail when
    the collate returns fewer or more rows each of which is an item unchanged (it lost or
    repeated items); warn when its rows are not items (packing or splitting on purpose?)."""
    want, size = ctx.data.batch_size, length_of(ctx.data.train)
    if size is None or size < want or n == want:
        return
    msg = f"the first training batch holds {n} examples, data.batch_size is {want}: "
    intact = None if ctx.data.train_loader_fn is not None else _rows_are_items(ctx, want)
    if intact is False:
        f.warn(
            msg + f"the collate_fn makes {n} rows of {want} items, none of them an item as "
            "given: if it packs or splits examples on purpose, trackcheck's checks see its "
            "rows as the examples"
        )
        return
    msg += (
        f"the collate_fn {'drops' if n < want else 'repeats'} items (it must return one row "
        "per item it is given)"
    )
    if intact:
        f.fail(msg)
    else:
        f.warn(msg + ", or the train loader ignores its batch_size argument")


def _rows_are_items(ctx: Context, k: int) -> bool | None:
    """Whether every row the collate makes of the first ``k`` training items is one of them
    unchanged (collated alone); None when the items cannot be read by index."""
    collate = ctx.data.collate_fn or default_collate

    def alone(item: Any) -> str:  # a collate that drops items returns nothing for one item
        try:
            rows = row_fingerprints(collate([item]))
        except (IndexError, ValueError, RuntimeError):
            rows = []
        return rows[0] if len(rows) == 1 else row_fingerprints(default_collate([item]))[0]

    try:
        items = [ctx.data.train[i] for i in range(k)]
        singles = {alone(item) for item in items}
        return all(r in singles for r in row_fingerprints(collate(items)))
    except (TypeError, NotImplementedError, KeyError, IndexError, ValueError, RuntimeError):
        return None


def _check_duplicates(ctx: Context, b: Batch, f: Findings, p: Thresholds) -> None:
    """One example filling most of a batch, or far more repeated rows than the data has."""
    n = len(b)
    counts = Counter(row_fingerprints(map_tensors(_cpu, b.x)))
    top, dup = max(counts.values()), n - len(counts)
    base = _dataset_duplicates(ctx, p.dataset_items)
    base_dup, base_top = base if base is not None else (0.0, 0.0)
    f.metrics.update(
        duplicate_examples=float(dup),
        max_repeats=float(top),
        dataset_duplicate_share=base_dup if base is not None else float("nan"),
    )
    data = (
        f"the dataset's first {p.dataset_items} items by index repeat {base_dup:.0%}"
        if base is not None
        else "the dataset cannot be read by index"
    )
    if n >= 4 and top > p.max_repeat_share * n and base_top <= p.max_repeat_share:
        f.fail(
            f"one example fills {top} of the {n} rows of a training batch ({data}): a "
            "collate_fn that repeats one item, or a sampler that yields one index"
        )
    elif n >= 4 and dup / n > base_dup + p.excess_duplicates:
        f.warn(
            f"{dup} of the {n} rows of a training batch repeat another row ({data}): the "
            "collate_fn or sampler repeats examples (a sampler with replacement or "
            "oversampling does this on purpose)"
        )


def _cpu(t: Tensor) -> Tensor:
    return t.detach().cpu()


def _dataset_duplicates(ctx: Context, m: int) -> tuple[float, float] | None:
    """(share of repeated items, share of the most common one) among the first ``m``
    training items by index, inputs only; None when the dataset cannot be indexed."""
    ds = ctx.data.train
    try:
        n = min(len(ds), m)  # type: ignore[arg-type]
        fps = [fingerprint(_item_inputs(ctx, ds[i])) for i in range(n)]
    except (TypeError, NotImplementedError, KeyError, IndexError, AttributeError):
        return None
    if not fps:
        return None
    counts = Counter(fps)
    return 1 - len(counts) / n, max(counts.values()) / n


def _item_inputs(ctx: Context, item: Any) -> Any:
    """A dataset item without its target (as the pipeline splits a batch)."""
    if isinstance(item, Mapping):
        key = ctx.pipeline.target_key_in(item)
        return {k: v for k, v in item.items() if k != key}
    if isinstance(item, tuple | list) and len(item) >= 2:
        return list(item[:-1])
    return item
