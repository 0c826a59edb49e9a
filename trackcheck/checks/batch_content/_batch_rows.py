"""What a loader's batches hold, row by row, and what its sampler asked for (batch_content).

A row's fingerprint hashes the inputs of one example after the loader and its collate_fn
(the target is left out: two examples with the same inputs are the same example to the
model), padding excluded (``_fingerprint.row_fingerprints``). Duplicates are counted as
``rows - distinct``: the rows a batch (or a pass) holds beyond its distinct examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from torch.utils.data.distributed import DistributedSampler

from trackcheck._lazy import lazy_module
from trackcheck.checks._shared._fingerprint import row_fingerprints
from trackcheck.context import Context

if TYPE_CHECKING:
    from scipy import stats
else:  # scipy is imported when a test is computed, not with the checks
    stats = lazy_module("scipy.stats")

# samplers whose law torch defines: their index streams are trusted as they come
KNOWN_SAMPLERS = (
    SequentialSampler,
    RandomSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
    DistributedSampler,
)


def to_cpu(obj: Any) -> Any:
    """A batch's inputs on the CPU, one copy per tensor (not one per row)."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def duplicates(prints: Sequence[str]) -> int:
    """Rows beyond the distinct ones: 0 when every row is another example."""
    return len(prints) - len(set(prints))


def pairs(sizes: Iterable[int]) -> int:
    """Pairs of rows that could collide: sum of C(b, 2) over the groups."""
    return sum(b * (b - 1) // 2 for b in sizes)


@dataclass
class Pass:
    """Fingerprints of the rows one loader pass delivered, per batch."""

    batches: list[list[str]] = field(default_factory=list)
    whole_epoch: bool = False  # the pass read the loader to its end

    @property
    def rows(self) -> list[str]:
        return [f for b in self.batches for f in b]

    @property
    def within(self) -> int:
        """Duplicates inside batches, summed over the batches."""
        return sum(duplicates(b) for b in self.batches)

    @property
    def across(self) -> int:
        """Duplicates over the whole pass."""
        return duplicates(self.rows)

    def mean_distinct_fraction(self) -> float:
        fr = [len(set(b)) / len(b) for b in self.batches if b]
        return sum(fr) / len(fr) if fr else math.nan


def loader_pass(ctx: Context, loader: Iterable[Any], limit: int) -> Pass:
    """The input fingerprints of the loader's batches until ``limit`` rows (or its end)."""
    out = Pass()
    seen = 0
    for b in ctx.batches(loader):
        out.batches.append(row_fingerprints(to_cpu(b.x)))
        seen += len(out.batches[-1])
        if seen >= limit:
            return out
    out.whole_epoch = True
    return out


def index_batches(loader: Any, limit: int) -> list[list[int]] | None:
    """The batches of dataset indices the loader's batch sampler draws (no data read), until
    ``limit`` indices; None when the loader has no index stream (an IterableDataset, a plain
    iterable, a loader without automatic batching)."""
    bs = getattr(loader, "batch_sampler", None)
    if bs is None or isinstance(getattr(loader, "dataset", None), IterableDataset):
        return None
    out: list[list[int]] = []
    seen = 0
    for idx in bs:
        out.append([int(i) for i in idx])
        seen += len(out[-1])
        if seen >= limit:
            break
    return out


def known_sampler(loader: Any) -> bool:
    """Whether the loader's sampler is one of torch's own, batched by a plain BatchSampler."""
    bs = getattr(loader, "batch_sampler", None)
    return type(bs) is BatchSampler and isinstance(getattr(loader, "sampler", None), KNOWN_SAMPLERS)


def reference(
    ctx: Context, dataset: Any, collate: Callable[..., Any], groups: list[list[int]]
) -> Pass:
    """The items at these indices, each collated alone (``collate([ds[i]])``: a collate_fn
    that repeats or drops rows cannot act on a single item), grouped as ``groups``: what the
    loader's batches hold when the collate keeps each item once."""
    out = Pass()
    for group in groups:
        prints = []
        for i in group:
            prints += row_fingerprints(to_cpu(ctx.pipeline.split(collate([dataset[i]])).x))
        out.batches.append(prints)
    return out


def excess_p(d_obs: int, pairs_obs: int, d_ref: int, pairs_ref: int) -> float:
    """One-sided p-value that the observed duplicates exceed the reference's beyond chance.

    Under the null both counts come from the same law per pair of rows (the same sampler on
    the same dataset), roughly Poisson with means proportional to their pairs, so given
    their sum the observed count is Binomial(d_obs + d_ref, pairs_obs / (pairs_obs +
    pairs_ref)) (the conditional test for two Poisson rates)."""
    total = d_obs + d_ref
    if d_obs == 0 or pairs_obs == 0:
        return 1.0
    if pairs_ref == 0:
        return 0.0
    share = pairs_obs / (pairs_obs + pairs_ref)
    return float(stats.binomtest(d_obs, total, share, alternative="greater").pvalue)


def uniform_excess_p(indices: Sequence[int], n_items: int) -> tuple[float, float]:
    """(expected repeats, p-value) of the index stream's repeats against uniform sampling
    with replacement from ``n_items``, the most repetitive of torch's uniform samplers:
    n draws repeat n - N(1 - (1 - 1/N)^n) indices on average, about Poisson."""
    n = len(indices)
    expected = n - n_items * (1 - (1 - 1 / n_items) ** n) if n_items > 0 else 0.0
    d = duplicates([str(i) for i in indices])
    if d == 0:
        return expected, 1.0
    return expected, float(stats.poisson.sf(d - 1, max(expected, 1e-12)))
