"""the batches the model receives hold distinct examples: what the loaders deliver, row by row.

Training loader: a few batches (``train_examples`` rows), each row's inputs fingerprinted after
the loader and its collate_fn. Their duplicates (rows beyond the distinct ones, within each
batch and over the pass) are compared with a reference drawn from the loader's own sampler:
the indices its batch sampler yields (a second pass, another seed, no data read), each item
collated alone. The reference holds the dataset's own duplicates and the sampler's repeats
(with replacement, weighted) and nothing a collate_fn or a caching loader adds, so under a
faithful data path both counts follow one law; more duplicates in the batches is a bug in
the collate_fn, the dataset's __getitem__ or the loader. The sampler is judged on its own:
one index for every draw is a bug; a custom sampler that repeats indices more than uniform
sampling with replacement warns.

Eval loader: read to its end (when the test set has at most ``eval_examples`` examples),
every test example must come exactly once: as many rows as the test set has, and no more
duplicates than the test set's own items hold (full_eval's metric depends on it).

Augmentation that changes an example on every fetch hides repeats (augmentation_off says
whether any is on); the reference is read only when the batches hold duplicates, so a clean
data path costs one pass of a few batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, default_collate

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks.batch_content._batch_rows import (
    Pass,
    excess_p,
    index_batches,
    known_sampler,
    loader_pass,
    pairs,
    reference,
    uniform_excess_p,
)
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.data.spec import length_of
from trackcheck.registry import register

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class BatchContentParams:
    # rows read from the training loader: 4 batches of 64, two more than needed to see a
    # batch repeated across batches; a collate_fn that repeats items shows in the first one
    train_examples: int = 256
    # the eval loader is read to its end when the test set has at most this many examples
    # (every example exactly once, checked exactly); a bigger one is judged on its first
    # this many rows by the duplicate test below
    eval_examples: int = 2048
    # one-sided level of each duplicate test (train: within batches and over the pass,
    # alpha / 2 each; eval: the rows of a partial pass); the custom-sampler warning uses it
    # too. 1e-3: at most one false alarm in a thousand stages on a faithful data path,
    # while the planted bugs give p < 1e-60 (63 repeats of one item per batch)
    alpha: float = 1e-3


@dataclass
class Findings:
    metrics: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # fail
    warnings: list[str] = field(default_factory=list)  # warn
    summary: list[str] = field(default_factory=list)  # the values, said first


def _collate(loader: Any, ctx: Context) -> Any:
    return getattr(loader, "collate_fn", None) or ctx.data.collate_fn or default_collate


def _train(ctx: Context, p: BatchContentParams, f: Findings) -> Pass:
    loader = ctx.data.train_loader(generator=ctx.generator(_streams.BATCH_CONTENT))
    seen = loader_pass(ctx, loader, p.train_examples)
    rows = seen.rows
    n_items = length_of(getattr(loader, "dataset", ctx.data.train))
    f.metrics.update(
        train_rows=float(len(rows)),
        train_batches=float(len(seen.batches)),
        train_distinct=float(len(set(rows))),
        train_within_duplicates=float(seen.within),
        train_across_duplicates=float(seen.across),
    )
    f.summary.append(
        f"train: {len(rows)} rows in {len(seen.batches)} batches hold {len(set(rows))} "
        f"distinct examples ({seen.within} repeats within batches, {seen.across} over the pass)"
    )
    if not rows:
        f.problems.append(
            "the training loader yielded no rows: is drop_last cutting its only batch?"
        )
        return seen
    # the sampler's own index stream, from a second loader (another seed: the same law)
    ref_loader: Any = ctx.data.train_loader(generator=ctx.generator(_streams.BATCH_CONTENT + 1))
    groups = index_batches(ref_loader, p.train_examples)
    law = "the sampler's own indices"
    if groups is not None:
        _judge_sampler(ref_loader, groups, n_items or 0, p, f)
    else:  # a plain iterable: compare with the most repetitive uniform law, with replacement
        ref_loader, law = _Items(ctx), "indices drawn uniformly with replacement"
        groups = _uniform_groups(ctx, [len(b) for b in seen.batches])
    if len(rows) >= 2 and len(set(rows)) == 1 and (n_items or 2) >= 2:
        f.problems.append(
            f"all {len(rows)} training rows are one example: training would see a single "
            "example (a sampler that returns one index, a dataset or collate_fn that ignores "
            "its index)"
        )
    elif (seen.within or seen.across) and groups is not None:
        _compare(ctx, ref_loader, groups, law, seen, p, f)
    elif seen.within or seen.across:
        f.summary.append(
            "(no index stream to compare with: the training set is an IterableDataset)"
        )
    _row_counts(loader, seen, f)
    return seen


@dataclass
class _Items:
    """Stands in for a loader without an index stream: the DataSpec's training set."""

    ctx: Context

    @property
    def dataset(self) -> Any:
        return self.ctx.data.train

    @property
    def collate_fn(self) -> Any:
        return self.ctx.data.collate_fn or default_collate


def _uniform_groups(ctx: Context, sizes: list[int]) -> list[list[int]] | None:
    """Batches of these sizes of indices drawn uniformly with replacement (seeded); None
    for a training set without a length (an IterableDataset)."""
    n = length_of(ctx.data.train)
    if not n or isinstance(ctx.data.train, IterableDataset):
        return None
    g = ctx.generator(_streams.BATCH_CONTENT + 1)
    return [torch.randint(n, (b,), generator=g).tolist() for b in sizes]


def _judge_sampler(
    loader: Any, groups: list[list[int]], n_items: int, p: BatchContentParams, f: Findings
) -> None:
    flat = [i for g in groups for i in g]
    f.metrics["train_sampler_distinct_indices"] = float(len(set(flat)))
    name = type(getattr(loader, "sampler", None)).__name__
    if len(flat) >= 2 and len(set(flat)) == 1 and n_items >= 2:
        f.problems.append(
            f"the sampler ({name}) returned index {flat[0]} for all {len(flat)} draws of a "
            f"{n_items}-example training set: fix its __iter__"
        )
    elif not known_sampler(loader) and n_items > 0:
        expected, pv = uniform_excess_p(flat, n_items)
        if pv < p.alpha:
            f.warnings.append(
                f"the custom sampler {name} repeated {len(flat) - len(set(flat))} of "
                f"{len(flat)} indices, where uniform sampling with replacement repeats "
                f"{expected:.1f} on average (p = {pv:.2g}): fine if it weights examples on "
                "purpose, else its indices repeat"
            )


def _compare(
    ctx: Context,
    loader: Any,
    groups: list[list[int]],
    law: str,
    seen: Pass,
    p: BatchContentParams,
    f: Findings,
) -> None:
    """Duplicates in the delivered batches against the sampler's items collated one by one."""
    ref = reference(ctx, loader.dataset, _collate(loader, ctx), groups)
    f.metrics.update(
        train_reference_within=float(ref.within), train_reference_across=float(ref.across)
    )
    sizes, ref_sizes = [len(b) for b in seen.batches], [len(b) for b in ref.batches]
    p_within = excess_p(seen.within, pairs(sizes), ref.within, pairs(ref_sizes))
    p_across = excess_p(seen.across, pairs([sum(sizes)]), ref.across, pairs([sum(ref_sizes)]))
    f.metrics.update(train_within_p=p_within, train_across_p=p_across)
    f.summary.append(
        f"{law}, each item collated alone, repeat {ref.within} within "
        f"batches and {ref.across} over {sum(ref_sizes)} rows"
    )
    if p_within < p.alpha / 2:
        f.problems.append(
            f"the training batches repeat {seen.within} rows within batches where {law} "
            f"give {ref.within} (p = {p_within:.2g}): the collate_fn or the "
            "dataset's __getitem__ returns the same example for several indices"
        )
    if p_across < p.alpha / 2:
        f.problems.append(
            f"over {sum(sizes)} rows the training batches repeat {seen.across} examples where "
            f"{law} give {ref.across} (p = {p_across:.2g}): the loader delivers "
            "the same batches again (a cached or re-yielded batch)"
        )


def _row_counts(loader: Any, seen: Pass, f: Findings) -> None:
    """Rows per batch against the loader's batch_size (the epoch's last batch may be short)."""
    bsz = getattr(loader, "batch_size", None)
    n_batches = length_of(loader)
    if not isinstance(bsz, int):
        return
    odd = [
        (k, len(b))
        for k, b in enumerate(seen.batches)
        if len(b) > bsz or (len(b) < bsz and (n_batches is None or k < n_batches - 1))
    ]
    if odd:
        k, r = odd[0]
        f.warnings.append(
            f"{len(odd)} training batches hold another number of rows than the batch size "
            f"{bsz} (batch {k}: {r} rows): the collate_fn drops or adds examples (ignore this "
            "if it packs or splits them on purpose)"
        )


def _eval(ctx: Context, p: BatchContentParams, f: Findings) -> Pass:
    loader = ctx.data.test_loader()
    seen = loader_pass(ctx, loader, p.eval_examples)
    rows = seen.rows
    ds = getattr(loader, "dataset", ctx.data.test)
    n_test = length_of(ds)
    f.metrics.update(
        eval_rows=float(len(rows)),
        eval_distinct=float(len(set(rows))),
        eval_duplicates=float(seen.across),
    )
    whole = seen.whole_epoch and n_test is not None
    what = f"{len(rows)} rows for {n_test} test examples" if whole else f"first {len(rows)} rows"
    f.summary.append(f"eval: {what}, {len(set(rows))} distinct")
    if whole and len(rows) != n_test:
        f.problems.append(
            f"the eval loader yields {len(rows)} rows for {n_test} test examples "
            f"({len(rows) - (n_test or 0):+d}): a drop_last=True, a sampler that skips or "
            "repeats indices, or a loop that stops early; full_eval needs each example once"
        )
    if seen.across and n_test:
        _compare_eval(ctx, loader, ds, seen, whole, p, f)
    return seen


def _compare_eval(
    ctx: Context,
    loader: Any,
    ds: Any,
    seen: Pass,
    whole: bool,
    p: BatchContentParams,
    f: Findings,
) -> None:
    """The eval rows' duplicates against the test set's own items, in order, collated alone."""
    n = len(seen.rows)
    ref = reference(ctx, ds, _collate(loader, ctx), [list(range(min(n, len(ds))))])
    f.metrics["eval_reference_duplicates"] = float(ref.across)
    if whole:  # the same items: exactly as many duplicates, no chance involved
        bad = seen.across > ref.across
        detail = f"the test set's own items hold {ref.across}"
    else:
        pv = excess_p(seen.across, pairs([n]), ref.across, pairs([len(ref.rows)]))
        f.metrics["eval_duplicates_p"] = pv
        bad = pv < p.alpha
        detail = f"its first {len(ref.rows)} items hold {ref.across} (p = {pv:.2g})"
    if bad:
        f.problems.append(
            f"the eval loader repeats {seen.across} examples where {detail}: it evaluates "
            "some examples twice (and, with the count right, skips others)"
        )


def distinct_figure(
    train_rows: list[int], train_distinct: list[int], eval_rows: list[int], eval_distinct: list[int]
) -> Figure:
    """Rows and distinct examples per batch, train and eval: the bars should match."""
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(7, 3))
    axes = fig.subplots(1, 2)
    plots.fixed_margins(fig, left=0.6, wgap=0.7)  # wgap: the right panel's y label
    for ax, rows, distinct, name in (
        (axes[0], train_rows, train_distinct, "training batches"),
        (axes[1], eval_rows, eval_distinct, "eval batches"),
    ):
        pos = np.arange(len(rows))
        ax.bar(pos, rows, color="lightgray", label="rows")
        ax.bar(pos, distinct, width=0.5, color="tab:blue", label="distinct examples")
        ax.set(title=name, xlabel="batch", ylabel="examples")
        ax.legend(fontsize=7)
    return fig


@register("batch_content", BatchContentParams, fast=True)
def batch_content(ctx: Context, p: BatchContentParams) -> CheckResult:
    """The batches hold distinct examples: no collate, sampler or loader repeats or drops them."""
    f = Findings()
    train = _train(ctx, p, f)
    evals = _eval(ctx, p, f)
    value = train.mean_distinct_fraction()
    f.metrics["train_distinct_fraction"] = value
    status = Status.FAIL if f.problems else Status.WARN if f.warnings else Status.PASS
    said = "; ".join(f.summary)
    if f.problems or f.warnings:
        msg = f"{said}. " + "; ".join(f.problems + f.warnings)
    else:
        msg = f"{said}: every batch holds distinct examples, the eval loader each example once"
    figure = plots.deferred(
        distinct_figure,
        [len(b) for b in train.batches],
        [len(set(b)) for b in train.batches],
        [len(b) for b in evals.batches],
        [len(set(b)) for b in evals.batches],
    )
    return CheckResult(
        "batch_content",
        status,
        msg,
        metrics=f.metrics,
        figures={"distinct_per_batch": figure},
        value=value,
        threshold=f"repeats as the sampler's own items (p >= {p.alpha:g}); eval: each once",
    )
