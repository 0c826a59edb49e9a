"""human baseline: the model's human-readable metric logged beside a human baseline.

The baseline is a number you give with its source (``checks.human_baseline.human_metric=0.98
checks.human_baseline.source="..."``), or the agreement between two annotations of the test
set (``from_datasets(human_labels=...)``: one annotation scored as the prediction, the test
labels as ground truth, with its own 95% interval). trackcheck never invents a human figure:
without one the check skips and says how to give one.

The model's metric is taken after a short run (``steps``) and evaluated over the whole test
set, so the tracker shows where a briefly trained model stands against the human; the fair
comparison is your full training run, which logs the same metric. The check judges the
baseline itself (in the metric's range, cited, not a copy of the labels), not the model: a
model below the human after a few steps is expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._bn import CALIBRATION_BATCHES, recalibrate
from trackcheck.checks._shared._eval import (
    Estimate,
    estimate,
    evaluate,
    invalid_labels,
    labels_as_outputs,
    metric_range,
)
from trackcheck.context import Context
from trackcheck.core import CheckResult, SkipCheck, Status
from trackcheck.registry import register
from trackcheck.training import train_steps

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HOW_TO = (
    "give one as checks.human_baseline.human_metric=0.98 "
    "checks.human_baseline.source='who measured it, on what' (the task's metric: accuracy as a "
    "fraction, MAE in target units), or a second annotation of the test set, aligned with it, "
    "via trackcheck.data.from_datasets(human_labels=...)"
)


@dataclass
class HumanBaselineParams:
    # the human's value of the task's metric (ctx.task.metric_name): accuracy as a fraction
    # in [0, 1], MAE in the targets' units. None: no number (annotations may still be given)
    human_metric: float | None = None
    # where the number comes from (a paper, your own labelling of k test examples); a number
    # without a source cannot be checked by anyone, so it warns
    source: str = ""
    # optimizer steps before the model's metric is taken (0: the untrained model). 50 Adam
    # steps (lr 1e-3) take digits' ResNet from 10% to 81% (at the default 3e-3: 96%, measured
    # with and without the BatchNorm recalibration below): enough to set beside a human,
    # under a second on 2 CPU cores
    steps: int = 50
    # the generator stream the short run draws batches from
    seed_offset: int = _streams.HUMAN_BASELINE
    # BatchNorm models: the running statistics are recomputed on the next this-many training
    # batches after the short run, before the eval-mode pass over the test set (a slow
    # momentum leaves them far from the trained network's; checks/_shared/_bn.py). At
    # momentum 0.01, 50 steps: accuracy 0.10-0.19 without, 0.51-0.67 with (5 seeds, the
    # MobileNetV3-style net of tests/models.py); +0.07 s on resnet/digits (0.43 -> 0.50 s)
    bn_batches: int = CALIBRATION_BATCHES


@dataclass
class Baseline:
    label: str  # how the figure and message name it
    value: float
    estimate: Estimate | None = None  # with an interval when measured from annotations
    per_example: Tensor | None = None  # [N] human agreement per test example, in test order


def _number(
    p: HumanBaselineParams, metric: str, lo: float, hi: float
) -> tuple[Baseline | None, str]:
    """The given number as a Baseline, or why it is not a valid value of the metric."""
    if p.human_metric is None:
        return None, ""
    h = float(p.human_metric)
    if not (math.isfinite(h) and lo <= h <= hi):
        hint = f"; did you give a percentage? use {h / 100:g}" if hi == 1 and 1 < h <= 100 else ""
        valid = f"the valid range of {metric} [{lo:g}, {hi:g}]"
        return None, f"human_metric={h:g} is outside {valid}{hint}"
    return Baseline(f"human ({p.source or 'no source given'})", h), ""


def _annotations(ctx: Context) -> tuple[Baseline | None, str, str]:
    """(baseline from the second annotation, why it is invalid, why it is suspicious)."""
    human = ctx.data.human_labels
    if human is None:
        return None, "", ""
    n = len(ctx.data.test)  # type: ignore[arg-type]
    truth = ctx.targets("test", limit=n)  # [N] (or [N, T]) in test-set order
    if human.shape != truth.shape:
        return (
            None,
            (
                f"the second annotation has shape {list(human.shape)}, the test labels "
                f"{list(truth.shape)}: it must hold one label per test example, in test order"
            ),
            "",
        )
    bad = invalid_labels(ctx.task, human)
    if bad:
        return None, f"the second annotation is not a valid set of labels: {bad}", ""
    if human.data_ptr() == truth.data_ptr() and human.stride() == truth.stride():
        return (
            None,
            (
                "the second annotation is the test labels themselves (the same memory), not an "
                "independent annotation"
            ),
            "",
        )
    agree = ctx.task.per_example_metric(labels_as_outputs(ctx.task, human), truth).double()
    est = estimate(agree)
    suspicious = ""
    if torch.equal(human, truth.to(human.dtype)):
        # rule of three: with 0 disagreements in n, the 95% upper bound on the rate is ~3/n
        suspicious = (
            f"the second annotation equals the test labels on all {n} examples: most likely a "
            "copy of the labels, not a second annotation (two independent annotators agree "
            f"everywhere only if their disagreement rate is below ~3/n = {3 / n:.2g})"
        )
    return Baseline("human (2nd annotation)", est.mean, est, agree), "", suspicious


def _model_estimate(ctx: Context, p: HumanBaselineParams) -> tuple[Estimate, Tensor]:
    model = ctx.new_model()
    if p.steps > 0:
        batches = ctx.train_batches(p.seed_offset)
        train_steps(ctx, model, batches, p.steps)
        recalibrate(ctx, model, batches, p.bn_batches)  # a no-op without BatchNorm
    run = evaluate(ctx, model)
    return estimate(run.metric), run.metric


def _rows(
    model: Estimate, steps: int, baselines: list[Baseline]
) -> list[tuple[str, float, tuple[float, float] | None]]:
    """(label, value, 95% interval or None) for the model and each baseline: plain data."""
    rows: list[tuple[str, float, Estimate | None]] = [
        (f"model after {steps} steps", model.mean, model)
    ]
    rows += [(b.label[:50], b.value, b.estimate) for b in baselines]
    return [(lab, v, None if e is None else (e.lo, e.hi)) for lab, v, e in rows]


def _figure(metric: str, rows: list[tuple[str, float, tuple[float, float] | None]]) -> Figure:
    """Model and human side by side, each with its 95% interval where it has one."""
    labels = [r[0] for r in rows]
    title = f"{metric}: model beside the human baseline (95% CI)"
    left = plots.text_inches(labels, 8) + 0.2  # the labels (up to 50 characters) as y ticks
    width = left + max(4.0, plots.text_inches([title], 10) + 0.4)  # the title over the axes
    fig, ax = plots.figure(width, 1.2 + 0.5 * len(rows), left=left, bottom=0.5, top=0.3)
    for i, (_, value, ci) in enumerate(rows):
        xerr = None if ci is None else [[value - ci[0]], [ci[1] - value]]
        ax.errorbar(value, i, xerr=xerr, fmt="o", capsize=4, color=f"C{i}")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set(xlabel=metric)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    return fig


def _comparison(metric: str, higher: bool, model: Estimate, b: Baseline, per_ex: Tensor) -> str:
    """One sentence: the gap between model and human, with its interval where one exists."""
    if b.per_example is not None:  # same examples: a paired interval for the gap
        gap = estimate(per_ex - b.per_example)
        text = f"gap model - human {gap.mean:+.3g} (paired 95% CI [{gap.lo:+.3g}, {gap.hi:+.3g}])"
        beyond = gap.lo > 0 if higher else gap.hi < 0
    else:
        text = f"gap model - human {model.mean - b.value:+.3g}"
        beyond = model.lo > b.value if higher else model.hi < b.value
    if beyond:
        text += (
            "; the model already beats the human beyond its interval: if the human figure "
            "is right, look for test examples leaking into training"
        )
    return f"{b.label} {metric} {b.value:.4g}: {text}"


@register("human_baseline", HumanBaselineParams)
def human_baseline(ctx: Context, p: HumanBaselineParams) -> CheckResult:
    """The model's human-readable metric beside a human baseline (a number or two annotations)."""
    task, metric = ctx.task, ctx.task.metric_name
    if p.human_metric is None and ctx.data.human_labels is None:
        raise SkipCheck(f"no human baseline given: {HOW_TO}. trackcheck never invents one")
    lo, hi = metric_range(task)
    number, number_error = _number(p, metric, lo, hi)
    annotated, annot_error, suspicious = _annotations(ctx)
    errors = [e for e in (number_error, annot_error) if e]
    if errors:
        return CheckResult(
            "human_baseline",
            Status.FAIL,
            "; ".join(errors) + f". Fix the baseline: {HOW_TO}",
            threshold=f"{metric} in [{lo:g}, {hi:g}]",
        )
    baselines = [b for b in (number, annotated) if b is not None]
    model, per_ex = _model_estimate(ctx, p)

    metrics = model.metrics(f"model_{metric}")
    if number is not None:
        metrics[f"human_{metric}"] = number.value
    if annotated is not None and annotated.estimate is not None:
        metrics.update(annotated.estimate.metrics(f"annotator_{metric}"))
    warnings = [suspicious] if suspicious else []
    if number is not None and not p.source.strip():
        warnings.append("the human figure has no source: say where it comes from (source=...)")
    comparisons = [_comparison(metric, task.higher_is_better, model, b, per_ex) for b in baselines]
    msg = f"model after {p.steps} steps: {metric} {model}; " + "; ".join(comparisons)
    if warnings:
        msg += ". " + "; ".join(warnings)
    return CheckResult(
        "human_baseline",
        Status.WARN if warnings else Status.PASS,
        msg,
        metrics=metrics,
        figures={"side_by_side": plots.deferred(_figure, metric, _rows(model, p.steps, baselines))},
        value=baselines[0].value,
        threshold=f"a cited human {metric} in [{lo:g}, {hi:g}]",
    )
