"""the learning rate is in the usable range: Smith's range test (Smith 2017, "Cyclical
Learning Rates for Training Neural Networks", section 3.3), a diagnosis for a training check
that failed.

A fresh model trains on shuffled training batches while the learning rate grows
exponentially from ``min_lr`` to ``max_lr`` over ``steps`` steps, or on to twice a configured
lr above ``max_lr`` at as many steps a decade (every param group of the configured optimizer
scaled alike, keeping their ratios). The per-step loss is smoothed by a
centred moving average; then

* the steepest-descent lr: where the smoothed loss falls fastest per decade of lr;
* the divergence lr: the first lr past the minimum at which the smoothed loss exceeds
  ``diverge_factor`` x the minimum, returns to the initial loss after a dip of at least
  ``min_drop``, or turns NaN/Inf (the
  sweep stops early on an explosion);
* the configured lr (group 0's lr as the optimizer was built) is judged against both:
  fail at or above the divergence lr, warn when it is ``slow_factor`` or more below the
  steepest-descent lr, pass otherwise; fail too when a training check's run at the
  configured lr diverged by the shared judgement (the run's own numbers), whatever the
  sweep's few steps an lr show. The run's own numbers count the other way too: when a run
  at the configured lr spiked and recovered (the shared judgement's "recovered": its loss
  ended far below its start) and none diverged, a configured lr at or above the sweep's
  divergence lr warns instead of failing: the sweep's lr keeps rising, so it never sees
  the recovery a run at a constant lr makes. The message names the usable range measured:
  from the steepest descent / ``slow_factor`` to the divergence lr.

It runs when overfit_batch or loss_decreases failed in this stage, or when any training
check's run diverged by the shared trajectory judgement (checks/_shared/_trajectory.py: the loss
ended above its start, spiked, went non-finite, or the outputs exploded) or recovered from
a spike, under
``when: on_failure``; on every run with ``when: always``. It is part of ``checks=fast``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from trackcheck import plots
from trackcheck._lazy import lazy_module
from trackcheck.checks._shared import _streams, _trajectory
from trackcheck.checks._shared._common import require_trainable
from trackcheck.context import Context
from trackcheck.core import CheckResult, ConfigError, SkipCheck, Status
from trackcheck.registry import register

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from scipy import ndimage
else:
    ndimage = lazy_module("scipy.ndimage")  # ~0.6 s of start-up, paid only when it sweeps

WHEN = ("on_failure", "always")


@dataclass
class LrRangeParams:
    # on_failure: only after one of `after` failed or warned in this stage, or a training
    # check's run diverged; always: every run
    when: str = "on_failure"
    after: list[str] = field(default_factory=lambda: ["overfit_batch", "loss_decreases"])
    # the sweep: 7 decades in 84 steps, 12 per decade (fastai's lr_find: 100 steps over
    # 1e-7..10); enough resolution to place the steepest slope within about a third of a
    # decade
    min_lr: float = 1e-6
    max_lr: float = 10.0
    steps: int = 84
    # the most steps a sweep extended to a configured lr above max_lr takes (10 decades at
    # 12 a decade: up to a configured lr of 5e3; beyond it the steps thin out): the fast
    # selection's budget counts it (tests/test_fast_budget.py)
    max_sweep_steps: int = 120
    # the curve analysed: a centred moving average of this many steps (0.75 decade at 12
    # steps per decade), without the lag of fastai's EMA, which shifts the curve right
    window: int = 9
    # the EMA (bias-corrected, about 10 steps) that stops the sweep early on an explosion
    smoothing: float = 0.9
    # the loss has diverged when its smoothed value exceeds this many times the lowest
    # (fastai and Smith's implementations stop at 4x), or is back at the initial loss
    # after its minimum (_diverged)
    diverge_factor: float = 4.0
    # "back at the initial loss" needs the smoothed minimum this far below it (a share of
    # the initial loss): a smaller dip is a plateau's noise, not something learnt
    min_drop: float = 0.1
    # warn when the configured lr is this many times below the steepest-descent lr. The
    # useful lrs lie within about a decade below the steepest slope (fastai suggests
    # steepest or the minimum's lr / 10); the steepest point of one short sweep is uncertain
    # by about half a decade: 100 = a decade of range plus a decade of margin
    slow_factor: float = 100.0


@dataclass
class Sweep:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    diverged_at: int | None  # the step whose smoothed loss diverged (None: never)


def _triggered(ctx: Context, p: LrRangeParams) -> list[str]:
    """The checks before this one that call for a range test: those in ``p.after`` that
    failed or warned (overfit_batch warns when its fit is undecided at the cap or fits
    only at another lr: both lr questions), and every check whose run the shared trajectory
    judgement calls diverging (the loss ended above its start, spiked, went non-finite, or
    the outputs exploded)."""
    flagged = (*_trajectory.DIVERGING, *_trajectory.UNSTABLE)
    return [
        f"{r.name}'s run {_trajectory.recorded(r)}"
        if _trajectory.recorded(r) in flagged
        else f"{r.name} {r.status.value}ed"
        for r in ctx.finished
        if (
            r.name in p.after
            and r.status in (Status.FAIL, Status.WARN)
            and not r.metrics.get("loss_wiring")
        )
        or _trajectory.recorded(r) in flagged
    ]


def _recovered(ctx: Context) -> list[str]:
    """The checks whose run at the configured lr spiked or overstepped and then recovered
    (the shared judgement's "recovered"): the lr trains, past an unstable start."""
    return [r.name for r in ctx.finished if _trajectory.recorded(r) in _trajectory.UNSTABLE]


def _blown_up(ctx: Context) -> list[str]:
    """The checks whose run at the configured lr diverged by the shared judgement (a loss
    that went non-finite, spiked or ended above its start, outputs that exploded): the
    run's own numbers, whatever one sweep's few steps an lr show. On correct models the
    judgement's margins are wide (checks/_shared/_trajectory.py: a spike ratio of at most 1.15
    against a limit of 4)."""
    return [
        f"{r.name} ({_trajectory.recorded(r)})"
        for r in ctx.finished
        if _trajectory.recorded(r) in _trajectory.DIVERGING
    ]


def _sweep(ctx: Context, p: LrRangeParams) -> tuple[Sweep, float]:
    """The range test on a fresh model; also returns the configured lr (group 0, as built)."""
    model = ctx.new_model()
    require_trainable(model, "lr_range")
    opt = ctx.optimizer(model)
    base = [float(g["lr"]) for g in opt.param_groups]
    if not base or base[0] <= 0:
        raise SkipCheck(f"lr_range: the optimizer's lr is {base[:1]}: nothing to sweep")
    batches = ctx.train_batches(seed_offset=_streams.LR_RANGE)
    # a configured lr above max_lr: the sweep goes on to it (x2), at the same steps a decade
    top = max(p.max_lr, 2 * base[0])
    decades = math.log(top / p.min_lr) / math.log(p.max_lr / p.min_lr)
    steps = min(max(p.steps, round(p.steps * decades)), p.max_sweep_steps)
    growth = (top / p.min_lr) ** (1 / max(steps - 1, 1))
    sweep = Sweep([], [], [], None)
    avg, best = 0.0, math.inf
    model.train()
    for step in range(steps):
        lr = p.min_lr * growth**step
        for g, b0 in zip(opt.param_groups, base, strict=True):
            g["lr"] = lr * b0 / base[0]  # the groups keep their ratios to group 0
        loss = ctx.train_step(model, next(batches), opt)
        sweep.lrs.append(lr)
        sweep.losses.append(loss)
        if not math.isfinite(loss):
            break
        # the running EMA only decides when to stop early (an explosion); the analysis
        # uses the centred average below, which does not lag behind the lr
        avg = p.smoothing * avg + (1 - p.smoothing) * loss
        smooth = avg / (1 - p.smoothing ** (step + 1))
        best = min(best, smooth)
        if smooth > p.diverge_factor * best and best > 0:
            break
    sweep.smoothed = _centred(sweep.losses, p.window)
    sweep.diverged_at = _diverged(sweep, p, steps)
    return sweep, base[0]


def _centred(losses: list[float], window: int) -> list[float]:
    """A centred moving average (``window`` steps, shrinking at the ends); inf from the
    first non-finite loss on."""
    v = np.asarray(losses, dtype=np.float64)
    bad = ~np.isfinite(v)
    end = int(np.argmax(bad)) if bad.any() else len(v)
    out = np.full(len(v), np.inf)
    if end:
        out[:end] = ndimage.uniform_filter1d(v[:end], size=min(window, end), mode="nearest")
    return [float(x) for x in out]


def _diverged(sweep: Sweep, p: LrRangeParams, steps: int) -> int | None:
    """The first step after the smoothed minimum whose smoothed loss is non-finite, above
    ``diverge_factor`` x the minimum, or back at the initial loss (the mean loss of the
    first decade of lr, where nothing is learnt yet): every gain undone. Cross-entropy
    under a much too large step often collapses the model to a constant output, the
    prior's loss, instead of exploding, so the factor alone would miss it."""
    s = np.asarray(sweep.smoothed)
    if not len(s):
        return None
    per_decade = max(1, round(len(sweep.lrs) / max(math.log10(sweep.lrs[-1] / sweep.lrs[0]), 1)))
    start = float(np.mean(sweep.losses[:per_decade])) if math.isfinite(s[0]) else math.inf
    i_min = int(np.argmin(s))
    best = float(s[i_min])
    # back at the start counts only after a real dip: a plateau (BERT's first steps dip
    # 1%) rises back to its start by noise alone
    learnt = start - best >= p.min_drop * abs(start)
    for i in range(i_min + 1, len(s)):
        back = learnt and s[i] >= start
        if not math.isfinite(s[i]) or s[i] > p.diverge_factor * best or back:
            return i
    if len(sweep.losses) < steps:  # stopped early on the EMA's explosion
        return len(sweep.losses) - 1
    return None


def _steepest(sweep: Sweep) -> float:
    """The lr where the smoothed loss falls fastest per unit of log10(lr), at or before
    its minimum; nan when the loss never falls."""
    s = np.asarray(sweep.smoothed, dtype=np.float64)
    end = int(np.argmin(s)) + 1 if len(s) and np.isfinite(s).any() else 0
    if end < 3:
        return math.nan
    slope = np.gradient(s[:end], np.log10(np.asarray(sweep.lrs[:end])))
    i = int(np.argmin(slope))
    return sweep.lrs[i] if slope[i] < 0 else math.nan


def range_figure(
    lrs: list[float], losses: list[float], smoothed: list[float], marks: dict[str, float]
) -> Figure:
    """Loss against learning rate (log x): raw and smoothed, the lrs found marked."""
    fig, ax = plots.figure()
    ax.plot(lrs, losses, color="lightgray", lw=1, label="loss")
    finite = [v if math.isfinite(v) else np.nan for v in smoothed]
    ax.plot(lrs, finite, color="tab:blue", lw=1.5, label="smoothed")
    colors = {"steepest": "tab:green", "divergence": "tab:red", "configured": "k"}
    for name, lr in marks.items():
        if math.isfinite(lr):
            ax.axvline(lr, color=colors.get(name, "gray"), ls="--", lw=1, label=f"{name} {lr:.2g}")
    top = [v for v in finite if np.isfinite(v)]
    if top:
        ax.set_ylim(min(top) - 0.05 * abs(min(top)), 1.5 * max(top[0], min(top)) + 1e-12)
    ax.set(xscale="log", title="learning-rate range test", xlabel="learning rate", ylabel="loss")
    plots.sparse_log_minor_ticks(ax.xaxis)
    ax.legend(fontsize=8)
    return fig


def usable(steepest: float, diverge: float, top: float, p: LrRangeParams) -> str:
    """The usable range the sweep measured, in words: from the steepest descent /
    ``slow_factor`` (slower than that warns) up to the divergence lr (which fails)."""
    lo = f"{steepest / p.slow_factor:.2g}" if math.isfinite(steepest) else "?"
    hi = f"{diverge:.2g})" if math.isfinite(diverge) else f"{top:.2g}] (no divergence up to it)"
    return f"usable range measured [{lo}, {hi}"


def _verdict(
    configured: float,
    steepest: float,
    diverge: float,
    p: LrRangeParams,
    blown: list[str],
    top: float,
    recovered: list[str] | None = None,
) -> tuple[Status, str]:
    found = f"configured lr {configured:.3g}, steepest descent at {steepest:.3g}, " + (
        f"divergence at {diverge:.3g}" if math.isfinite(diverge) else f"no divergence up to {top:g}"
    )
    found += f"; {usable(steepest, diverge, top, p)}"
    fix = f" (about {steepest:.2g}, the steepest descent)" if math.isfinite(steepest) else ""
    if math.isfinite(diverge) and configured >= diverge and recovered and not blown:
        return Status.WARN, (
            f"{found}: the configured lr is at or above the lr where the sweep's loss diverged "
            f"(smoothed loss > {p.diverge_factor:g}x its best), and at it the run of "
            f"{', '.join(recovered)} spiked before it recovered: training starts beyond the "
            f"edge of stability; a lower lr{fix} starts without the spike"
        )
    if math.isfinite(diverge) and configured >= diverge:
        return Status.FAIL, (
            f"{found}: the configured lr is at or above the lr where the loss diverged "
            f"(smoothed loss > {p.diverge_factor:g}x its best): lower it{fix}"
        )
    if blown:
        return Status.FAIL, (
            f"{found}: at the configured lr {configured:.3g} the run of {', '.join(blown)} "
            "diverged, so the lr is above the usable range for a run longer than the sweep's "
            f"few steps an lr: lower it{fix}"
        )
    if not math.isfinite(steepest):
        return Status.WARN, (
            f"{found}: no lr in [{p.min_lr:g}, {top:g}] made the smoothed loss fall, so "
            "the lr is not what keeps it from training: look at the data, the loss and the "
            "gradients (contract, overfit_batch)"
        )
    if configured * p.slow_factor <= steepest:
        return Status.WARN, (
            f"{found}: the configured lr is {steepest / configured:.3g}x below the steepest "
            f"descent (warn at {p.slow_factor:g}x): training will be slow; try about "
            f"{steepest:.2g} or a decade below it"
        )
    return Status.PASS, f"{found}: the configured lr is in the usable range"


@register("lr_range", LrRangeParams, fast=True)
def lr_range(ctx: Context, p: LrRangeParams) -> CheckResult:
    """The learning rate lies in the usable range of a range test (on failure, or always)."""
    if p.when not in WHEN:
        raise ConfigError(f"checks.lr_range.when={p.when!r}: use one of {', '.join(WHEN)}")
    failed = _triggered(ctx, p)
    if p.when == "on_failure" and not failed:
        raise SkipCheck(
            f"runs after a failed or warned training check ({', '.join(p.after)} passed here) or "
            "a training run that diverged (none did); "
            "to run it anyway: checks.lr_range.when=always (Python: params={'lr_range': "
            "{'when': 'always'}})"
        )
    sweep, configured = _sweep(ctx, p)
    steepest = _steepest(sweep)
    diverge = sweep.lrs[sweep.diverged_at] if sweep.diverged_at is not None else math.nan
    finite = [(v, lr) for v, lr in zip(sweep.smoothed, sweep.lrs, strict=True) if math.isfinite(v)]
    best, best_lr = min(finite) if finite else (math.nan, math.nan)
    top = max(p.max_lr, 2 * configured)
    status, msg = _verdict(configured, steepest, diverge, p, _blown_up(ctx), top, _recovered(ctx))
    if failed:
        msg = f"after {', '.join(failed)}: {msg}"
    metrics = {
        "configured_lr": configured,
        "steepest_lr": steepest,
        "divergence_lr": diverge,
        "diverged": float(sweep.diverged_at is not None),
        "min_smoothed_loss": best,
        "min_loss_lr": best_lr,
        "steps": float(len(sweep.losses)),
    }
    marks = {"steepest": steepest, "divergence": diverge, "configured": configured}
    figure = plots.deferred(range_figure, sweep.lrs, sweep.losses, sweep.smoothed, marks)
    return CheckResult(
        "lr_range",
        status,
        msg,
        metrics=metrics,
        series={
            "loss": list(enumerate(sweep.losses)),
            "lr": list(enumerate(sweep.lrs)),
        },
        figures={"loss_vs_lr": figure},
        value=steepest,
        threshold=f"configured lr < divergence lr and > steepest / {p.slow_factor:g}",
    )
