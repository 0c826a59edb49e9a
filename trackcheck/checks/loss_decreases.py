"""verify decreasing training loss: a short run trends down (extended while it sits on a
plateau), every trainable parameter moves, and a slightly bigger model does not train worse."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from trackcheck import plots
from trackcheck._lazy import lazy_module
from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._common import require_trainable
from trackcheck.checks.gradient_flow import finding_note, with_finding_note
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.registry import register
from trackcheck.training import train_steps

if TYPE_CHECKING:
    from scipy import stats
else:  # scipy is imported when a test is computed, not with the checks
    stats = lazy_module("scipy.stats")


@dataclass
class LossDecreasesParams:
    # The first look: the trend test runs after this many steps, and, while it is undecided
    # (p >= its level), again after each further `steps`, up to max_steps. A transformer at
    # a fine-tuning lr sits on its initial plateau: a tiny BERT classifier (hidden 32, 2
    # layers, tests/hf_models.py) on marker sequences at Adam 3e-5 gives p = 0.025-0.61 at
    # 60 steps over 8 seeds (the old single look at 0.01 failed all 8), and p < 0.0025
    # after 100-160 steps; an MLP at Adam 3e-5 on blobs 0.001-0.22 at 60, decided by 110.
    steps: int = 60
    # the most steps in all: 4 looks (60, 120, 180, 240), 1.5x the longest plateau above
    max_steps: int = 240
    # Mann-Kendall trend test on the per-step losses (Kendall's tau against the step), on
    # every step so far at each look: fail unless the downward trend is significant at this
    # one-sided level. The looks share it (Bonferroni: alpha / number of looks each), so a
    # loss that never decreases passes with probability <= alpha however many looks there are.
    alpha: float = 0.01
    # The bigger model (model.bigger) trains on the same batches for as many steps. A short
    # run cannot show a capacity gain (a bigger model's edge appears late, if the loss is
    # capacity-bound at all), so a lower loss is reported as information; what a short run
    # can show is a bigger model that trains significantly WORSE, over the last quarter, by
    # a one-sided Wilcoxon test on the paired steps: a width that breaks the init or the lr.
    compare_bigger: bool = True
    bigger_alpha: float = 0.05
    # ...and only when it is worse by more than a change of seed moves the loss (the effect
    # size; a long enough run makes any difference significant): its last-quarter median
    # over the base model's must exceed 1 + this. Measured on the shipped pairs, seeds 0-4,
    # the base model's last-quarter median varies from seed to seed by CV 0.3% (gpt), 3%
    # (diabetes), 6.5% (resnet), 27% (mlp, a loss near 0); 10% is 1.5x resnet's. The correct
    # gpt pair's bigger model came out 0.6% higher at seed 3 (p=0.00076); a width that breaks
    # the init is +53% (tests/test_loss_decreases.py).
    bigger_min_worse: float = 0.1
    # trainable parameter tensors allowed to stay unchanged (fnmatch patterns on names)
    allow_unchanged: list[str] = field(default_factory=list)


def _trend(losses: list[float]) -> tuple[float, float, float]:
    """(tau, one-sided p-value for a decrease, Theil-Sen slope per step)."""
    steps = np.arange(len(losses))
    tau, p_two = stats.kendalltau(steps, losses)
    if not math.isfinite(tau):  # a constant loss: no trend at all
        return 0.0, 1.0, 0.0
    p_down = p_two / 2 if tau < 0 else 1 - p_two / 2
    slope = stats.theilslopes(losses, steps)[0]
    return float(tau), float(p_down), float(slope)


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor], allow: list[str]) -> list[str]:
    import fnmatch

    names = []
    for name, prm in model.named_parameters():
        if prm.requires_grad and torch.equal(prm.detach(), before[name]):
            if not any(fnmatch.fnmatch(name, pat) for pat in allow):
                names.append(name)
    return names


def _train_until_decided(
    ctx: Context, model: nn.Module, p: LossDecreasesParams
) -> tuple[list[float], int, float]:
    """Train in chunks of ``p.steps`` until the trend test at level alpha / n_looks decides
    or ``p.max_steps`` is reached. Returns (losses, looks taken, per-look level)."""
    n_looks = max(1, math.ceil(max(p.max_steps, p.steps) / p.steps))
    level = p.alpha / n_looks
    batches, opt = ctx.train_batches(seed_offset=_streams.LOSS_DECREASES), ctx.optimizer(model)
    losses: list[float] = []
    for look in range(1, n_looks + 1):
        chunk = min(p.steps, max(p.max_steps, p.steps) - len(losses))
        losses += train_steps(ctx, model, batches, chunk, opt)
        if not all(math.isfinite(v) for v in losses) or _trend(losses)[1] < level:
            return losses, look, level
    return losses, n_looks, level


@dataclass
class _Run:
    """One run's record: the per-step losses, the trend test's level, and what the report
    carries (metrics, series, and the curves the figure plots, one per model)."""

    losses: list[float]
    level: float  # of the trend test at each look: alpha / number of looks
    metrics: dict[str, float]
    series: dict[str, list[tuple[int, float]]]
    curves: dict[str, list[float]]


@register("loss_decreases", LossDecreasesParams, fast=False)
def loss_decreases(ctx: Context, p: LossDecreasesParams) -> CheckResult:
    """Training loss goes down over a short run (longer on a plateau); a bigger model is
    compared on the same batches."""
    model = ctx.new_model()
    require_trainable(model, "loss_decreases")
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    losses, looks, level = _train_until_decided(ctx, model, p)
    stale = _unchanged(model, before, p.allow_unchanged)
    run = _Run(
        losses,
        level,
        metrics={"first_loss": losses[0], "last_loss": losses[-1]},
        series={"loss": list(enumerate(losses))},
        curves={"model": losses},
    )
    if not all(math.isfinite(v) for v in losses):
        msg = (
            f"training loss became {losses[-1]} at step {len(losses) - 1}: lower the learning rate"
        ) + finding_note(ctx)
        figs = {"loss": plots.deferred(plots.curves, run.curves, "training loss")}
        return CheckResult(
            "loss_decreases",
            Status.FAIL,
            msg,
            metrics=run.metrics,
            series=run.series,
            figures=figs,
        )
    problems = _measure(model, before, stale, looks, run)
    del model, before  # free them before the bigger model trains: one model in memory at a time
    notes, bigger_worse = [], False
    if p.compare_bigger and ctx.bigger_model_factory is not None and not problems:
        bigger_worse, note = _compare_bigger(ctx, p, run)
        notes.append(note)
    elif p.compare_bigger and ctx.bigger_model_factory is None:
        notes.append("no bigger model configured (model.bigger), so capacity was not compared")
    return with_finding_note(ctx, _judge(p, run, problems, notes, bigger_worse))


def _measure(
    model: nn.Module, before: dict[str, torch.Tensor], stale: list[str], looks: int, run: _Run
) -> list[str]:
    """The trend test's values and the parameters that never moved, into ``run.metrics``;
    returns the problems that fail the check."""
    losses = run.losses
    tau, p_down, slope = _trend(losses)
    q = max(len(losses) // 4, 1)
    drop = 1 - float(np.median(losses[-q:])) / float(np.median(losses[:q]))
    n_stale = sum(before[n].numel() for n in stale)
    n_total = sum(v.numel() for v in before.values())
    metrics = run.metrics
    metrics.update(kendall_tau=tau, p_value=p_down, level=run.level, steps=float(len(losses)))
    metrics.update(looks=float(looks), theil_sen_slope=slope, relative_drop=drop)
    metrics.update(unchanged_params=float(len(stale)), unchanged_fraction=n_stale / max(n_total, 1))
    return _problems(model, stale, n_stale, n_total, losses, p_down, run.level, tau, drop)


def _judge(
    p: LossDecreasesParams, run: _Run, problems: list[str], notes: list[str], bigger_worse: bool
) -> CheckResult:
    """FAIL on any problem; WARN when the bigger model trains significantly worse; else PASS."""
    losses, level, m = run.losses, run.level, run.metrics
    tau, p_down, drop = m["kendall_tau"], m["p_value"], m["relative_drop"]
    fig = plots.deferred(plots.curves, run.curves, "training loss (same batches)")
    n_looks = round(p.alpha / level)
    threshold = f"p < {level:.2g} at a look (alpha {p.alpha:g} / {n_looks} looks), all params move"
    if problems:
        status, msg = Status.FAIL, "; ".join(problems)
    else:
        status = Status.WARN if bigger_worse else Status.PASS
        msg = (
            f"loss {losses[0]:.4g} -> {losses[-1]:.4g} over {len(losses)} steps (Kendall "
            f"tau {tau:.2f}, p={p_down:.2g} < {level:.2g}; median drop {drop:.1%})"
        )
        msg += "".join(f"; {n}" for n in notes)
    return CheckResult(
        "loss_decreases",
        status,
        msg,
        metrics=m,
        series=run.series,
        figures={"loss": fig},
        value=p_down,
        threshold=threshold,
    )


def _problems(
    model: nn.Module,
    stale: list[str],
    n_stale: int,
    n_total: int,
    losses: list[float],
    p_down: float,
    level: float,
    tau: float,
    drop: float,
) -> list[str]:
    """What fails the check: parameters that never moved, a loss with no downward trend."""
    problems = []
    if stale:
        grads = {n: q.grad for n, q in model.named_parameters()}
        no_grad = [n for n in stale if (g := grads[n]) is None or not bool(g.abs().sum())]
        why = (
            "they receive no gradient: a .detach(), torch.no_grad() or .data in forward cuts "
            "them off"
            if no_grad
            else "they receive gradients but the optimizer never updates them: is it built over "
            "the wrong parameters (another model instance, only the head)?"
        )
        problems.append(
            f"{len(stale)} trainable parameter tensors ({n_stale / n_total:.0%} of "
            f"weights) never changed in {len(losses)} steps ({', '.join(stale[:4])}"
            f"{', ...' if len(stale) > 4 else ''}): {why}"
        )
    if p_down >= level:
        problems.append(
            f"no significant downward trend in {len(losses)} steps (Kendall tau "
            f"{tau:.2f}, p={p_down:.2g} >= {level:.2g}; median loss change "
            f"{-drop:+.1%}): check the learning rate and that the loss is "
            "backpropagated into the model"
        )
    return problems


def _compare_bigger(ctx: Context, p: LossDecreasesParams, run: _Run) -> tuple[bool, str]:
    """Train the bigger model as long on the same batches, compared over the last quarter;
    (significantly worse?, note). Its curve, series and metrics go into ``run``."""
    losses, metrics = run.losses, run.metrics
    q = max(len(losses) // 4, 1)
    big = ctx.new_model(bigger=True)
    big_losses = train_steps(
        ctx, big, ctx.train_batches(seed_offset=_streams.LOSS_DECREASES), len(losses)
    )
    run.curves["bigger model"] = big_losses
    run.series["bigger_loss"] = list(enumerate(big_losses))
    a, b = np.array(losses[-q:]), np.array(big_losses[-q:])
    finite = len(b) == len(a) and bool(np.isfinite(b).all())
    worse = 1.0
    if finite and q >= 5 and not np.array_equal(a, b):
        worse = float(stats.wilcoxon(b, a, alternative="greater").pvalue)
    elif not finite:
        worse = 0.0  # a bigger model whose loss diverges trains worse, whatever the test says
    ma, mb = float(np.median(a)), float(np.median(b)) if len(b) else math.nan
    rel = mb / ma - 1 if ma > 0 else (math.inf if mb > ma else 0.0)
    rel = rel if finite else math.inf
    metrics.update({"bigger_last_loss": mb, "bigger_p_worse": worse, "bigger_rel_worse": rel})
    compared = (
        f"the bigger model's median loss over the last {q} steps is {np.median(b):.4g} vs "
        f"{np.median(a):.4g}"
    )
    if worse < p.bigger_alpha and rel > p.bigger_min_worse:
        return True, (
            f"{compared}, {rel:+.1%}, significantly higher (p={worse:.2g} < "
            f"{p.bigger_alpha:g}) and by more than {p.bigger_min_worse:.0%}: the "
            "bigger model trains worse on the same batches: a size that breaks the init (a "
            "signal that vanishes or explodes with depth or width) or an lr too large for it"
        )
    lower = "lower" if mb < ma else f"not lower: {rel:+.1%}"
    if worse < p.bigger_alpha:  # consistent but small: within what a change of seed does
        lower += f", p={worse:.2g} but within the {p.bigger_min_worse:.0%} a seed change moves it"
    return False, (
        f"{compared} ({lower}; information only: {len(losses)} steps cannot show a capacity gain)"
    )
