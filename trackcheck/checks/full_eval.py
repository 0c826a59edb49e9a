"""add significant digits to your eval: every test example is evaluated exactly once, and the
metric comes with its standard error and 95% interval; a test set too small to resolve the
digits shown is flagged.

The model evaluated is the fresh, untrained one. What this check proves does not depend on
training: the eval loader's coverage is a property of the data path, and the interval width is
judged at the worst-case accuracy (or the one you expect), a property of the test set's size.
Training first would cost seconds and change neither verdict; the metric at init is logged as
a chance-level reference.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from trackcheck import plots
from trackcheck.checks._eval import (
    Z95,
    Estimate,
    TestPass,
    estimate,
    evaluate,
    histogram_figure,
    per_class_figure,
)
from trackcheck.checks._fingerprint import row_fingerprints
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.registry import register


@dataclass
class FullEvalParams:
    batch_size: int | None = None  # None: the eval loader's own batch size (data.batch_size)
    # Accuracy-like metrics (values in [0, 1]): warn when the 95% interval's half-width,
    # z * sqrt(p(1-p)/n), exceeds this. 0.02 resolves a 2-point difference (93% vs 95%), the
    # size of a typical hyperparameter gain; it needs n >= (0.98/0.02)^2 = 2401 at p = 0.5.
    # The shipped digits test set (360) gives +-0.052, so it warns: that is the honest answer.
    max_half_width: float = 0.02
    # The accuracy p the half-width is judged at. None: the worst case p = 0.5, because before
    # training the final accuracy is unknown. Give the accuracy you expect to reach (e.g. 0.98)
    # to judge the test set at that point instead.
    expected_metric: float | None = None
    # Unbounded metrics (MAE): warn when half-width / metric exceeds this, measured on the
    # model's errors (a 5% relative change in MAE is then resolvable). For normal errors the
    # ratio is 1.96 * 0.76 / sqrt(n), model-independent: it needs n >= 885.
    max_rel_half_width: float = 0.05
    # match every example's bytes against the test dataset's own items (multiset of hashes).
    # Padding is left out of the bytes (a dict batch's attention_mask marks it), so a
    # collate_fn that pads per batch matches; turn off for one that changes rows otherwise
    # (packs sequences, or pads without an attention_mask)
    match_examples: bool = True


def _reference_fingerprints(ctx: Context, batch_size: int) -> list[str]:
    """The test dataset's own items, each once, collated like the eval loader collates."""
    ds = ctx.data.test
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=ctx.data.collate_fn)
    return [f for batch in loader for f in row_fingerprints(batch)]


def _coverage(seen: list[str], expected: list[str]) -> tuple[int, int]:
    """(examples the loader repeated, examples it skipped), counted as multisets."""
    got, want = Counter(seen), Counter(expected)
    return sum((got - want).values()), sum((want - got).values())


def _judge_width(ctx: Context, p: FullEvalParams, est: Estimate) -> tuple[bool, str, float]:
    """(too wide?, the sentence that says so, the half-width judged)."""
    if ctx.task.classification:
        acc = 0.5 if p.expected_metric is None else p.expected_metric
        half = Z95 * math.sqrt(acc * (1 - acc) / est.n)
        at = "the worst case p=0.5" if p.expected_metric is None else f"the expected p={acc:g}"
        need = math.ceil(Z95**2 * acc * (1 - acc) / p.max_half_width**2)
        text = f"{est.n} test examples resolve {ctx.task.metric_name} to +-{half:.3f} (95%) at {at}"
        if half > p.max_half_width:
            text += f", wider than +-{p.max_half_width:g}: differences below that are noise; "
            text += f"{need} examples would resolve it"
        return half > p.max_half_width, text, half
    rel = est.half_width / est.mean if est.mean > 0 else math.inf
    text = f"the 95% interval is +-{rel:.1%} of the {ctx.task.metric_name}"
    if rel > p.max_rel_half_width:
        need = math.ceil(est.n * (rel / p.max_rel_half_width) ** 2)
        text += f", wider than +-{p.max_rel_half_width:.0%}; about {need} examples would resolve it"
    return rel > p.max_rel_half_width, text, rel


def _resolution_figure(ctx: Context, p: FullEvalParams, est: Estimate, judged: float) -> Figure:
    """The 95% half-width against the test-set size (it shrinks as 1/sqrt(n)), this test set
    marked: how far the set is from resolving the digits asked for."""
    n = np.logspace(1, max(5.0, math.log10(est.n) + 1), 200)
    fig, ax = plots.figure()
    if ctx.task.classification:
        acc = 0.5 if p.expected_metric is None else p.expected_metric
        ax.plot(n, Z95 * np.sqrt(acc * (1 - acc) / n), label=f"95% half-width at p={acc:g}")
        limit, ylabel = p.max_half_width, f"+- {ctx.task.metric_name}"
    else:  # relative half-width, scaled from the one measured here
        ax.plot(n, judged * np.sqrt(est.n / n), label="95% half-width / metric (measured)")
        limit, ylabel = p.max_rel_half_width, f"+- relative {ctx.task.metric_name}"
    ax.axhline(limit, color="k", ls="--", lw=1, label=f"limit {limit:g}")
    ax.axvline(est.n, color="tab:red", lw=1.5, label=f"this test set (n={est.n})")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="test examples",
        ylabel=ylabel,
        title="significant digits: interval width vs test-set size",
    )
    ax.legend(fontsize=8)
    return fig


def _figures(
    ctx: Context, p: FullEvalParams, run: TestPass, est: Estimate, judged: float
) -> dict[str, Any]:
    task, name = ctx.task, ctx.task.metric_name
    figures: dict[str, Any] = {"resolution": _resolution_figure(ctx, p, est, judged)}
    # per-class bars while they stay readable; past 30 classes a histogram instead
    if task.classification and run.targets.dim() == 1 and len(run.targets.unique()) <= 30:
        title = f"{name} per class (model at init), 95% intervals"
        figures["per_class"] = per_class_figure(
            run.metric, run.targets, ctx.data.class_names, title
        )
    else:
        title = f"per-example {name} over the full test set (model at init)"
        figures["histogram"] = histogram_figure(run.metric, est, f"per-example {name}", title)
    return figures


@register("full_eval", FullEvalParams, fast=True, order=30)
def full_eval(ctx: Context, p: FullEvalParams) -> CheckResult:
    """Every test example is evaluated exactly once; the metric comes with its 95% interval."""
    model = ctx.new_model()
    run = evaluate(ctx, model, p.batch_size, fingerprints=p.match_examples)
    est = estimate(run.metric)
    n_expected, repeated, skipped = _measure_coverage(ctx, p, run)
    too_wide, width_text, judged = _judge_width(ctx, p, est)

    name = ctx.task.metric_name
    metrics = {
        **est.metrics(name),
        "n_evaluated": float(est.n),
        "n_test_set": float(n_expected),
        "n_repeated": float(repeated),
        "n_skipped": float(skipped),
        "half_width_judged": judged,
    }
    threshold = (
        f"n = {n_expected} exactly once; half-width <= {p.max_half_width:g}"
        if ctx.task.classification
        else f"n = {n_expected} exactly once; half-width <= {p.max_rel_half_width:.0%}"
    )
    problems = _problems(est, n_expected, repeated, skipped, name)
    summary = f"{name} at init {est} over {run.n_batches} batches"
    if problems:
        status = Status.FAIL
        msg = (
            "; ".join(problems) + f". Expected every test example exactly once: a drop_last=True, "
            "a sampler that shuffles with replacement or splits across ranks, or a loop that "
            "stops early in the eval loader (data.test_loader_fn) biases the metric; "
            f"measured {summary}"
        )
    else:
        status = Status.WARN if too_wide else Status.PASS
        msg = f"all {n_expected} test examples evaluated exactly once; {summary}; {width_text}"
        if too_wide:
            msg += " (a bigger test set, or report the interval beside the metric)"
    return CheckResult(
        "full_eval",
        status,
        msg,
        metrics=metrics,
        figures=_figures(ctx, p, run, est, judged),
        value=est.mean,
        threshold=threshold,
    )


def _measure_coverage(ctx: Context, p: FullEvalParams, run: TestPass) -> tuple[int, int, int]:
    """(test-set size, examples the loader repeated, examples it skipped); the last two stay
    0 unless ``match_examples``."""
    repeated = skipped = 0
    reference: list[str] = []
    sized = hasattr(ctx.data.test, "__len__")
    if p.match_examples or not sized:  # an IterableDataset is counted by iterating it
        reference = _reference_fingerprints(ctx, p.batch_size or ctx.data.batch_size)
    if p.match_examples:
        repeated, skipped = _coverage(run.fingerprints, reference)
    n_expected = len(ctx.data.test) if sized else len(reference)  # type: ignore[arg-type]
    return n_expected, repeated, skipped


def _problems(est: Estimate, n_expected: int, repeated: int, skipped: int, name: str) -> list[str]:
    """What makes the metric wrong rather than imprecise: a count off, examples repeated or
    skipped, a non-finite metric."""
    problems = []
    if est.n != n_expected:
        problems.append(
            f"the eval loader yielded {est.n} examples, the test set has {n_expected} "
            f"({est.n - n_expected:+d})"
        )
    if repeated or skipped:
        problems.append(
            f"matching each example's bytes against the test set's items: {skipped} never "
            f"evaluated, {repeated} evaluated more than once"
        )
    if not math.isfinite(est.mean):
        problems.append(f"the {name} is {est.mean}: the model's outputs contain NaN/Inf")
    return problems
