"""add significant digits to your eval: every test example is evaluated exactly once, and the
metric comes with its standard error and 95% interval; the check says what the test set can
resolve and warns when that is less than you asked for, or when the set is clearly too small.

The model evaluated is the fresh, untrained one. What this check proves does not depend on
training: the eval loader's coverage is a property of the data path, and the interval width is
judged at the worst-case accuracy (or the one you expect), a property of the test set's size.
Training first would cost seconds and change neither verdict; the metric at init is logged as
a chance-level reference.

Resolution. A metric with values in [0, 1] (accuracy; an LM's per-sequence token accuracy) has
per-example variance <= p(1 - p) (equality for 0/1 values, the binomial case), so its mean over
n examples has SE <= sqrt(p(1-p)/n) and, by the CLT, a 95% half-width 1.96 x SE. That is
judged at the worst case p = 0.5 (the final accuracy is unknown before training) or at
``expected_metric``. An unbounded metric (MAE) has its sample SE; it is judged relative to
itself (half-width / MAE), which for normal errors is 1.96 x 0.755 / sqrt(n) whatever the model.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader

from trackcheck import plots
from trackcheck.checks._shared._eval import (
    Z95,
    Estimate,
    TestPass,
    estimate,
    evaluate,
    histogram_figure,
    per_class_figure,
)
from trackcheck.checks._shared._fingerprint import row_fingerprints
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.registry import register

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class FullEvalParams:
    batch_size: int | None = None  # None: the eval loader's own batch size (data.batch_size)
    # What you need to resolve, as the 95% half-width. Accuracy-like metrics (values in [0, 1]):
    # warn when 1.96 sqrt(p(1-p)/n) exceeds this; 0.02 resolves a 2-point difference (93% vs
    # 95%), the size of a typical hyperparameter gain, and needs n >= (0.98/0.02)^2 = 2401 at
    # p = 0.5. None: nothing asked; only the floor below judges.
    max_half_width: float | None = None
    # The same for unbounded metrics (MAE), relative to the metric: 0.05 resolves a 5% change,
    # n >= 885 for normal errors. None: nothing asked.
    max_rel_half_width: float | None = None
    # Clearly too small (judged when nothing is asked): the interval does not even know the
    # metric's first significant digit. For [0, 1] metrics that digit is the first decimal: a
    # half-width over 0.1 cannot tell 0.4 from 0.6 (nor 0.8 from 1.0 at 0.9), and 1.96 x 0.5 /
    # sqrt(n) <= 0.1 needs n >= 97 at p = 0.5. The shipped test sets (digits 360, breast_cancer
    # 114) resolve +-0.052 and +-0.092: they pass, and the message says what they resolve.
    coarsest_half_width: float = 0.1
    # The same floor relative to an unbounded metric: +-0.1 around the worst case p = 0.5 is
    # +-20% of the value; an MAE of 50 known only to +-20% could be a 40 or a 60, its first
    # digit unknown. For normal errors 1.96 x 0.755 / sqrt(n) <= 0.2 needs n >= 55; the
    # shipped diabetes test set (89) gives about +-16%.
    coarsest_rel_half_width: float = 0.2
    # The accuracy p the half-width is judged at. None: the worst case p = 0.5, because before
    # training the final accuracy is unknown. Give the accuracy you expect to reach (e.g. 0.98)
    # to judge the test set at that point instead.
    expected_metric: float | None = None
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


@dataclass(frozen=True)
class Resolution:
    """What the test set resolves (95% half-width, SE) and the limit it is judged against;
    absolute for a [0, 1] metric, relative to the metric for an unbounded one."""

    bounded: bool  # values in [0, 1]: judged at the accuracy ``at``
    at: float  # the p judged at (bounded); the metric measured (unbounded)
    se: float
    half: float
    limit: float
    asked: bool  # the limit is what the user asked for (max_*), not the floor (coarsest_*)
    n: int

    @property
    def too_wide(self) -> bool:
        return not self.half <= self.limit  # NaN (an empty or constant metric) is too wide

    @property
    def need(self) -> int:
        """Examples at which the half-width (shrinking as 1/sqrt(n)) reaches the limit."""
        return math.ceil(self.n * (self.half / self.limit) ** 2) if math.isfinite(self.half) else 0


def _resolution(ctx: Context, p: FullEvalParams, est: Estimate) -> Resolution:
    if ctx.task.classification:
        acc = 0.5 if p.expected_metric is None else p.expected_metric
        se = math.sqrt(acc * (1 - acc) / est.n) if est.n else math.nan  # no example: too wide
        asked = p.max_half_width is not None
        limit = p.max_half_width if p.max_half_width is not None else p.coarsest_half_width
        return Resolution(True, acc, se, Z95 * se, limit, asked, est.n)
    # an MAE of exactly 0 everywhere is resolved; one of a single example has no SE (NaN)
    mean = est.mean if est.mean > 0 else (math.inf if est.half_width == 0 else math.nan)
    asked = p.max_rel_half_width is not None
    limit = p.max_rel_half_width if p.max_rel_half_width is not None else p.coarsest_rel_half_width
    return Resolution(False, est.mean, est.se / mean, est.half_width / mean, limit, asked, est.n)


def _width_text(res: Resolution, name: str) -> str:
    """What the test set resolves, then (when too wide) against what and what would do."""
    if res.bounded:
        at = "the worst case p=0.5" if res.at == 0.5 else f"the expected p={res.at:g}"
        text = (
            f"{res.n} test examples resolve {name} to +-{res.half:.3f} (95%; SE {res.se:.3f}) "
            f"at {at}"
        )
        limit = f"+-{res.limit:g}"
    else:
        text = f"the 95% interval is +-{res.half:.1%} of the {name} (SE {res.se:.1%})"
        limit = f"+-{res.limit:.0%}"
    if not res.too_wide:
        return text + f", within {limit}"
    if res.asked:
        key = "max_half_width" if res.bounded else "max_rel_half_width"
        why = (
            f"wider than the {limit} asked (checks.full_eval.{key}): smaller differences are noise"
        )
    else:
        why = f"wider than {limit}: not even the first significant digit of the {name} is known"
    more = f"; about {res.need} examples would resolve it" if res.need else ""
    return text + f", {why}{more}"


def resolution_figure(
    n: int, bounded: bool, se: float, half: float, limit: float, asked: bool, name: str
) -> Figure:
    """The 95% half-width and the SE against the test-set size (both shrink as 1/sqrt(n)),
    this test set marked with what it resolves, and the limit it was judged against."""
    ns = np.logspace(1, max(5.0, math.log10(n) + 1), 200)
    fig, ax = plots.figure()
    scale = np.sqrt(n / ns)
    what = f"+- {name}" if bounded else f"+- relative {name}"
    ax.plot(ns, half * scale, label="95% half-width")
    ax.plot(ns, se * scale, ls=":", label="standard error")
    ax.axhline(limit, color="k", ls="--", lw=1, label=f"{'asked' if asked else 'floor'} {limit:g}")
    ax.axvline(n, color="tab:red", lw=1.5, label=f"this test set: n={n}")
    ax.plot([n], [half], "o", color="tab:red")
    # the note to the right of the point, or to its left in the right half of the plot
    # (where it would run off the figure)
    left = math.log10(n) > (1 + math.log10(ns[-1])) / 2
    ax.annotate(
        f"+-{half:.3g} (SE {se:.2g})",
        (n, half),
        textcoords="offset points",
        xytext=(-6 if left else 6, 6),
        ha="right" if left else "left",
    )
    ax.set(xscale="log", yscale="log", xlabel="test examples", ylabel=what)
    plots.sparse_log_minor_ticks(ax.xaxis, ax.yaxis)
    # at the default 12 pt this title is wider than the figure
    ax.set_title("what the test set resolves: interval width vs test-set size", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def per_class_plot(
    metric: np.ndarray, targets: np.ndarray, names: list[str] | None, title: str
) -> Figure:
    """``per_class_figure`` from plain arrays (a Deferred carries no tensors)."""
    return per_class_figure(torch.from_numpy(metric), torch.from_numpy(targets), names, title)


def histogram_plot(metric: np.ndarray, xlabel: str, title: str) -> Figure:
    """``histogram_figure`` from a plain array, its interval recomputed from it."""
    values = torch.from_numpy(metric)
    return histogram_figure(values, estimate(values), xlabel, title)


def _figures(ctx: Context, run: TestPass, res: Resolution) -> dict[str, plots.Deferred]:
    task, name = ctx.task, ctx.task.metric_name
    figures = {
        "resolution": plots.deferred(
            resolution_figure, res.n, res.bounded, res.se, res.half, res.limit, res.asked, name
        )
    }
    metric, targets = run.metric.numpy(), run.targets.numpy()
    # per-class bars while they stay readable; past 30 classes a histogram instead
    if task.classification and targets.ndim == 1 and len(np.unique(targets)) <= 30:
        title = f"{name} per class (model at init), 95% intervals"
        names = list(ctx.data.class_names) if ctx.data.class_names else None
        figures["per_class"] = plots.deferred(per_class_plot, metric, targets, names, title)
    else:
        title = f"per-example {name} over the full test set (model at init)"
        figures["histogram"] = plots.deferred(histogram_plot, metric, f"per-example {name}", title)
    return figures


@register("full_eval", FullEvalParams, fast=True)
def full_eval(ctx: Context, p: FullEvalParams) -> CheckResult:
    """Every test example is evaluated exactly once; the metric comes with its 95% interval."""
    model = ctx.new_model()
    run = evaluate(ctx, model, p.batch_size, fingerprints=p.match_examples)
    est = estimate(run.metric)
    n_expected, repeated, skipped = _measure_coverage(ctx, p, run)
    res = _resolution(ctx, p, est)

    name = ctx.task.metric_name
    metrics = {
        **est.metrics(name),
        "n_evaluated": float(est.n),
        "n_test_set": float(n_expected),
        "n_repeated": float(repeated),
        "n_skipped": float(skipped),
        "half_width_judged": res.half,
        "se_judged": res.se,
        "half_width_limit": res.limit,
        "n_to_resolve_limit": float(res.need),
    }
    limit = f"{res.limit:g}" if res.bounded else f"{res.limit:.0%}"
    threshold = f"n = {n_expected} exactly once; half-width <= {limit}"
    threshold += " (asked)" if res.asked else " (first digit)"
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
        status = Status.WARN if res.too_wide else Status.PASS
        msg = f"all {n_expected} test examples evaluated exactly once; {summary}; "
        msg += _width_text(res, name)
        if res.too_wide:
            msg += " (a bigger test set, or report the interval beside the metric)"
    return CheckResult(
        "full_eval",
        status,
        msg,
        metrics=metrics,
        figures=_figures(ctx, run, res),
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
