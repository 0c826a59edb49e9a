"""leakage: the test split shares no examples with the training split, and no single input
coordinate gives the target away.

Two leaks make a held-out loss too good to be true, and both are visible in the data alone
(no model, no training):

- test examples that are also training examples: exact copies, found by a content hash of
  all input tensors of each example (as the pipeline splits the batches: dict batches too);
  for float inputs of small data also near copies, by nearest neighbours (distance at most
  ``near_frac`` x the median distance between a training example and its nearest other
  one). The share of test examples with a copy is compared with the share of TRAINING
  examples with a copy elsewhere in the training split: under a random split the two agree
  (_data_leaks.py, beside this, says why), so a dataset's genuine duplicate rows raise
  both alike. The check fails when the test share exceeds that reference by more than
  ``fail_excess`` and a one-sided binomial test says the excess is no accident. Token
  sequences are compared whole and exactly: chunks of one corpus repeat short phrases, not
  whole windows.
- a target copied into the inputs: an input coordinate (a feature, a pixel, a token
  position) that determines the target on its own, or that the target determines, on the
  training split. Classification: sorted by that coordinate the label hardly ever changes
  between neighbours, or the coordinate hardly varies within a class (a one-hot label copied
  into C inputs); regression: its rank correlation with the target is ~1. Language modeling
  is exempt (the input at t + 1 IS the target at t; causality checks the model side).

Why in the data and not in the held-out loss: a leaked target is learned no faster than real
structure in a short run. Measured at the 30 steps of input_independent's first look (MLP,
Adam 3e-3, 2 seeds), the held-out loss's share explained beyond the input-free baseline was
0.83 (breast_cancer) and 0.91-0.93 with the label copied into a column; 0.79 (digits) and
0.81-0.83 with a one-hot label appended: no floor on it separates a leak from easy data
(noise-free synthetic labels are learnable without limit), while the data tests above score
a leak 0 and the best real coordinate >= 0.2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._data_read import SplitData, read_splits
from trackcheck.checks.leakage._data_leaks import (
    Determining,
    Overlap,
    determining_coords,
    exact_overlap,
    near_overlap,
)
from trackcheck.context import Context
from trackcheck.core import CheckResult, SkipCheck, Status
from trackcheck.registry import register


@dataclass
class LeakageParams:
    # examples read per split (a seeded random subset of a longer map-style split)
    max_examples: int = 10000
    # One-sided level of each overlap test (exact, near: alpha / 2 each, Bonferroni). The
    # shipped data (digits, breast_cancer, diabetes, synthetic, text) and the third-party
    # test data have no copy at all, exact or near (0 of 360, 114, 89, 512, 312 test
    # examples), so the margins there are the whole range.
    alpha: float = 1e-3
    # Excess of the test share over the training split's own duplicate share (the reference)
    # that warns / fails. A leak of 1% of the test split moves its accuracy by at most one
    # point: worth a look; 5% can change which model wins a comparison: a failure.
    warn_excess: float = 0.01
    fail_excess: float = 0.05
    # near copies: nearest neighbours of at most this many test (and as many training)
    # examples against the whole training split, when queries x train examples x values
    # stays under nn_budget multiply-adds (~0.02 s on one core); larger data: exact only
    nn_queries: int = 512
    nn_budget: float = 1e8
    # a near copy lies within this fraction of the median nearest-neighbour distance among
    # training examples. Measured: the closest test example of the shipped data lies at
    # 0.48 (digits), 0.51 (breast_cancer), 0.45 (diabetes), 0.63 (synthetic), 0.42 (the
    # third-party digit pixels) of that median, the closest pair of training examples at
    # >= 0.26: a margin of 5x; a copy with float noise lies at ~0.
    near_frac: float = 0.05
    # --- a target in the inputs --------------------------------------------------------
    target_in_inputs: bool = True  # false: skip this part (a toy problem that is so by design)
    max_rows: int = 4096  # examples per split the per-coordinate tests read
    # classification: flag a coordinate whose label changes (sorted by it, beyond the least
    # a determining coordinate needs) are at most this fraction of an independent one's.
    # A copied label scores 0. Measured on the training split, 100 random splits each: the
    # best coordinate scores >= 0.21 (breast_cancer), 0.86 (digits, synthetic); seed 0 of
    # the third-party data: 0.79 (digit pixels), 0.82 (markers): a margin of 10x.
    max_change_ratio: float = 0.02
    # a categorical coordinate (at most this many distinct values) may determine the label
    # through any map of its values: V - 1 changes then, not K - 1
    max_categories: int = 64
    # classification: flag a coordinate the label determines (a one-hot label copied into
    # the inputs: each copy singles out one class, so the sorted test above misses it): its
    # variance within the classes at most this share of its total variance. A copy scores 0.
    # Measured on the training split, 50 random splits each, the best real coordinate keeps
    # >= 0.35 (breast_cancer), 0.37 (digits), 0.71 (synthetic); seed 0 of the third-party
    # data: 0.32 (digit pixels), 0.97 (markers): a margin of 30x.
    max_within_share: float = 0.01
    # regression: flag a coordinate whose |Spearman rank correlation| with the target is at
    # least this (a copy, or a unit conversion: 1.0). diabetes' best over 100 random
    # splits: 0.63 (1 - |rho| >= 0.37).
    min_rank_corr: float = 0.999
    n_show: int = 5  # test -> train index pairs listed in the message


@register("leakage", LeakageParams, fast=True)
def leakage(ctx: Context, p: LeakageParams) -> CheckResult:
    """No test example is a training example, and no input coordinate gives the target away."""
    splits = read_splits(ctx, p.max_examples)
    tr, te = splits.train, splits.test
    if len(tr.hashes) == 0 or len(te.hashes) == 0:
        raise SkipCheck("leakage needs examples in both splits: one of them read empty")
    g = np.random.default_rng(ctx.seed + _streams.LEAKAGE)
    overlaps: list[Overlap] = [exact_overlap(tr, te)]
    notes = []
    near = near_overlap(tr, te, p.nn_queries, p.nn_budget, p.near_frac, g)
    if isinstance(near, str):
        notes.append(near)
    else:
        overlaps.append(near)
    found, margins = _determining(ctx, tr, p, g)
    return _judge(overlaps, found, margins, tr, te, notes, p, ctx.task.classification)


def _determining(
    ctx: Context, tr: SplitData, p: LeakageParams, g: np.random.Generator
) -> tuple[list[Determining], dict[str, float]]:
    if not p.target_in_inputs or ctx.task.per_position:
        return [], {}
    # the training split only: a model learns a leaked target there (a shortcut), and the
    # held-out loss is too good when the test split has it too; a test-only leak is never
    # learned. Its sample is also the larger: on breast_cancer's 114 test examples a real
    # feature comes within 2 label changes of determining the target
    return determining_coords(
        "train",
        tr,
        ctx.task.classification,
        p.max_rows,
        p.max_change_ratio,
        p.min_rank_corr,
        p.max_categories,
        p.max_within_share,
        g,
    )


def _judge(
    overlaps: list[Overlap],
    found: list[Determining],
    margins: dict[str, float],
    tr: SplitData,
    te: SplitData,
    notes: list[str],
    p: LeakageParams,
    classification: bool,
) -> CheckResult:
    level = p.alpha / len(overlaps)  # Bonferroni over the overlap tests
    metrics = dict(margins)
    status, parts = Status.PASS, []
    for o in overlaps:
        metrics.update(
            {
                f"{o.kind}_leaked_share": o.share,
                f"{o.kind}_n_leaked": float(len(o.test_rows)),
                f"{o.kind}_train_dup_share": o.k_ref / max(o.n_ref, 1),
                f"{o.kind}_p_value": o.p_value,
            }
        )
        significant = o.p_value < level
        if significant and o.excess > p.fail_excess:
            status = Status.FAIL
        elif significant and o.excess > p.warn_excess and status == Status.PASS:
            status = Status.WARN
        parts.append(_overlap_text(o, tr, te, p.n_show, exact=overlaps[0]))
    metrics["n_leaked"] = float(len(overlaps[0].test_rows))
    metrics["leaked_share"] = max(o.share for o in overlaps)
    metrics["n_target_coordinates"] = float(len(found))
    msg = "; ".join(parts)
    if status != Status.PASS:
        msg += (
            ": the test split overlaps the training split, so its loss partly measures "
            "memorisation. Split the raw data once (before augmentation or oversampling), "
            "deduplicate it first, and drop the test examples listed"
        )
    if found:
        status = Status.FAIL
        msg += ". " + _target_text(found)
    elif "best_coordinate_score" in margins:
        best = margins["best_coordinate_score"]
        closest = (
            f"1 - |rank correlation| {best:.2g}"
            if not classification
            else f"{best:.2g} of the label changes of an independent one, and "
            f"{margins['best_within_class_share']:.2g} of a coordinate's variance "
            "within the classes"
        )
        msg += f"; no input coordinate determines the target (the closest: {closest})"
    if notes:
        msg += " (" + "; ".join(notes) + ")"
    threshold = (
        f"test share - train duplicate share <= {p.warn_excess:g} (fail > {p.fail_excess:g}); "
        f"no coordinate determining the target"
    )
    finite = {k: v for k, v in metrics.items() if math.isfinite(v)}  # no coordinate judged: nan
    return CheckResult(
        "leakage", status, msg, metrics=finite, value=metrics["leaked_share"], threshold=threshold
    )


def _overlap_text(o: Overlap, tr: SplitData, te: SplitData, n_show: int, exact: Overlap) -> str:
    """'exact copies in the training split: 3 of 360 test examples (0.8%; ...) [pairs]';
    the near copies' pairs list only those that are not exact copies (listed already)."""
    rows: Iterable[tuple[int, int]] = zip(o.test_rows, o.train_rows, strict=True)
    if o is not exact:
        listed = set(exact.test_rows.tolist())
        rows = ((i, j) for i, j in rows if i not in listed)
    shown = [f"test {te.index[i]} -> train {tr.index[j]}" for i, j in rows]
    pairs = ", ".join(shown[:n_show])
    what = "exact copies" if o.kind == "exact" else f"near copies ({o.note})"
    sampled = "" if o.n_test == len(te.hashes) else " sampled"
    of_train = "" if tr.n_total in (None, len(tr.hashes)) else f" ({len(tr.hashes)} sampled)"
    text = (
        f"{what} in the training split{of_train}: {len(o.test_rows)} of {o.n_test}{sampled} "
        f"test examples ({o.share:.1%}; the training split's own rate: "
        f"{o.k_ref / max(o.n_ref, 1):.1%} of {o.n_ref}, binomial p = {o.p_value:.2g})"
    )
    more = ", ..." if len(shown) > n_show else ""
    return text + (f" [{pairs}{more}]" if pairs else "")


def _target_text(found: list[Determining]) -> str:
    first = found[0]
    others = [f.name for f in found[1:]]
    more = f" (and {len(others)} more: {', '.join(others[:3])})" if others else ""
    return (
        f"The input {first.name} gives the target away on the training split: {first.how}"
        f"{more}. The target (or a function of it) has leaked into the inputs, so a model "
        "learns the shortcut and a test split that has it too looks too good to be true: "
        "remove that input or fix how it is computed (a feature built from the label, an ID "
        "column sorted by class). If the task is so by design, set "
        "checks.leakage.target_in_inputs=false"
    )
