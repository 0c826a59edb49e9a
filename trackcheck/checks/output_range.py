"""the outputs can reach the targets: after a short fit on one batch, the predictions' range
is not capped by an activation the head should not have.

Procedure: a fresh model fits one shuffled training batch for ``steps`` steps (the loss and
optimizer training uses); the lowest and highest output entry are recorded at every step.
Each edge's running extreme is split into 4 windows: when its moves shrink by a ratio
r < 1 per window it is heading for a limit ``last * r / (1 - r)`` away (a geometric tail),
the bound it will not pass; a ReLU sits at 0 from the start (r = 0), a sigmoid or softmax
creeps to its asymptote, a plain Linear head under a loss that still pulls keeps its pace
(Adam moves every weight about lr per step: r >= 1, no limit). The check then asks what the
limits cost: the lowest loss any output confined to them reaches on the targets
(regression: every training target clamped into them; classification: the batch's targets,
the best logits in the box), measured from the loss's floor as a share of the gap to the
prior's loss, as overfit_batch measures "near zero". An edge that slows because the fit
reached its targets costs nothing; one that costs too much gets ``extend_steps`` more steps
and is judged again, so a clean head that merely slowed is not mistaken for a bounded one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._common import require_trainable
from trackcheck.checks._shared._floor import best_output, constant_output, mean_loss
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import Batch
from trackcheck.registry import register

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class OutputRangeParams:
    n_examples: int = 16  # the batch the short fit trains on
    # the fit's length: 4 windows of 6 steps. A ReLU head's lower edge is flat from step 0;
    # a sigmoid's pre-activation travels several units in 18 Adam steps at 3e-3, where its
    # output moves e^-3 as fast as at the start
    steps: int = 24
    # fail when the bound keeps the loss above floor + max_loss_ratio x (prior - floor):
    # the same "95% of the way from the prior to the floor" overfit_batch demands, which a
    # bounded head can then never pass
    max_loss_ratio: float = 0.05
    # when an edge heads for a limit (its moves shrink, _limit) that costs more than that,
    # the fit goes on this many steps and is judged again on the whole run: a clean head
    # that slowed as its batch was fit speeds up again, a bounded one keeps creeping
    extend_steps: int = 24
    # the message counts targets beyond a bound by more than this many target std
    tol_std: float = 0.1
    # classification: the floor and the bounded floor by Adam on a free tensor, as in
    # overfit_batch (300 steps x 0.1 lets a logit travel 30)
    floor_steps: int = 300
    floor_lr: float = 0.1


@dataclass
class Fit:
    losses: list[float]
    lo: list[float]  # [steps + 1] lowest output entry before each step, then at the end
    hi: list[float]
    out: Tensor  # the last output (CPU, float)


def _fit(ctx: Context, model: nn.Module, opt: Any, b: Batch, steps: int, fit: Fit) -> None:
    """``steps`` more training steps on batch ``b``, the output's extremes at each (the
    record taken after the last step is replaced when the fit goes on)."""
    model.train()
    if fit.losses:
        fit.lo.pop(), fit.hi.pop()

    def record(out: Tensor) -> None:
        o = out.detach().float()
        fit.lo.append(float(o.min()))
        fit.hi.append(float(o.max()))

    for _ in range(steps):
        if ctx.pipeline.step is None:  # train_step's own sequence, keeping the output
            opt.zero_grad(set_to_none=True)
            loss, out = ctx.batch_loss(model, b)
            record(out)
            ctx.meter.backward(loss)
            opt.step()
            v = float(loss.detach())
        else:
            with torch.no_grad():
                record(ctx.forward(model, b.x))
            v = ctx.train_step(model, b, opt)
        fit.losses.append(v)
        if not math.isfinite(v):
            break
    with torch.no_grad():
        out = ctx.forward(model, b.x).detach().float()
    record(out)
    fit.out = out.cpu()


def _limit(values: list[float], sign: float) -> tuple[float, float]:
    """(where the edge is heading, its last window's move / the one before) for the running
    extreme of ``sign * values`` (sign -1: the lower edge, moving down), over 4 windows.

    Moves that shrink by a ratio r < 1 per window are a geometric tail: the edge still has
    ``last * r / (1 - r)`` to go, its limit. A sigmoid's or softmax's edge creeps to its
    asymptote this way; a ReLU's stays put (r = 0, the limit is where it is); a plain
    Linear head's keeps its pace or speeds up (r >= 1, no limit: inf)."""
    env = np.maximum.accumulate(sign * np.asarray(values, dtype=np.float64))
    if not np.all(np.isfinite(env)) or len(env) < 5:
        return math.inf, math.nan
    w = (len(env) - 1) // 4
    prev, last = env[-1 - w] - env[-1 - 2 * w], env[-1] - env[-1 - w]
    r = last / prev if prev > 0 else (0.0 if last <= 0 else math.inf)
    if r >= 1:
        return math.inf, float(r)
    return sign * float(env[-1] + last * r / (1 - r)) + 0.0, float(r)  # + 0.0: no -0


@dataclass
class Cost:
    """What the bounded range costs: losses on the targets judged."""

    bounded: float  # the best loss with outputs confined to [lo, hi]
    floor: float  # the best loss of any output
    reference: float  # the prior's loss (a constant predictor)

    @property
    def ratio(self) -> float:
        gap = self.reference - self.floor
        return max(self.bounded - self.floor, 0.0) / gap if gap > 0 else 0.0


def _shaped(v: Tensor, like: Tensor) -> Tensor:
    """Targets [N, ...] as outputs shaped like the model's ([N] vs [N, 1])."""
    shape = (len(v), *like.shape[1:])
    return v.reshape(shape) if v.numel() == math.prod(shape) else v


def _regression_cost(ctx: Context, out: Tensor, lo: float, hi: float) -> tuple[Cost, Tensor]:
    """Every training target clamped into [lo, hi]: the best a bounded head can predict
    (for any loss that grows with the distance to the target). Returns (cost, targets)."""
    y = ctx.targets("train").float().to(ctx.device)
    like = out.to(ctx.device)
    cost = Cost(
        bounded=mean_loss(ctx, _shaped(y.clamp(lo, hi), like), y)[0],
        floor=mean_loss(ctx, _shaped(y, like), y)[0],
        reference=mean_loss(ctx, constant_output(ctx, _shaped(y, like), ctx.prior), y)[0],
    )
    return cost, y.cpu()


def _box(lo: float, hi: float) -> Callable[[Tensor], Tensor]:
    """A map from free z onto outputs inside [lo, hi] (either side may be infinite)."""
    if math.isfinite(lo) and math.isfinite(hi):
        return lambda z: lo + (hi - lo) * torch.sigmoid(z)
    if math.isfinite(lo):
        return lambda z: lo + torch.nn.functional.softplus(z)
    return lambda z: hi - torch.nn.functional.softplus(z)


def _corners(ctx: Context, like: Tensor, y: Tensor, lo: float, hi: float) -> Tensor:
    """The best outputs inside [lo, hi] for the task's own loss, in closed form: the
    target's logit at hi and every other at lo (cross-entropy falls with the target's logit
    and rises with each other one); binary: hi for a 1, lo for a 0. Shaped like ``like``."""
    if ctx.task.name == "binary":
        return torch.where(y.reshape(like.shape) > 0.5, hi, lo).to(like)
    ids = y.long().clamp_min(0)  # ignored positions (-100) get any valid id: they carry no loss
    onehot = torch.nn.functional.one_hot(ids, like.shape[-1]).to(like)
    return lo + (hi - lo) * onehot


def _classification_cost(
    ctx: Context, out: Tensor, y: Tensor, lo: float, hi: float, p: OutputRangeParams
) -> Cost:
    """The batch's best loss with every logit inside [lo, hi]: in closed form for the
    task's loss, by Adam on a free tensor for the user's own (label smoothing moves it)."""
    out = out.to(ctx.device)
    reference = mean_loss(ctx, constant_output(ctx, out, ctx.prior), y)[0]
    if not callable(ctx.pipeline.loss):
        wide = p.floor_steps * p.floor_lr  # as far as best_output lets a logit travel
        lo_c, hi_c = max(lo, -wide), min(hi, wide)
        with torch.no_grad():
            bounded = float(ctx.loss(_corners(ctx, out, y, lo_c, hi_c), y))
            floor = float(ctx.loss(_corners(ctx, out, y, -wide, wide), y))
        return Cost(bounded, floor, reference)
    box, zero = _box(lo, hi), torch.zeros_like(out)
    return Cost(
        bounded=best_output(lambda z: ctx.loss(box(z), y), zero, p.floor_steps, p.floor_lr)[0],
        floor=best_output(lambda o: ctx.loss(o, y), zero, p.floor_steps, p.floor_lr)[0],
        reference=reference,
    )


def _edge_text(side: str, bound: float, r: float, steps: int) -> str:
    verb = "below" if side == "lower" else "above"
    if r == 0:
        return f"predictions never go {verb} {bound:.3g} after {steps} steps"
    return (
        f"predictions head for a {side} bound at {bound:.3g} after {steps} steps (the "
        f"edge's moves shrink {r:.2f}x per window)"
    )


def _regression_text(y: Tensor, j: Judged, steps: int, p: OutputRangeParams) -> str:
    tol = p.tol_std * float(y.double().std()) if y.numel() > 1 else 0.0
    parts = []
    if math.isfinite(j.lo):
        below = float((y < j.lo - tol).double().mean())
        parts.append(
            f"{_edge_text('lower', j.lo, j.lo_share, steps)}, but {below:.0%} of targets are "
            f"below it (min {float(y.min()):.3g})"
        )
    if math.isfinite(j.hi):
        above = float((y > j.hi + tol).double().mean())
        parts.append(
            f"{_edge_text('upper', j.hi, j.hi_share, steps)}, but {above:.0%} of targets are "
            f"above it (max {float(y.max()):.3g})"
        )
    return "; ".join(parts)


def _hint(out: Tensor, lo: float, hi: float, classification: bool) -> str:
    """The activation the bounds point to."""
    near = lambda a, b: math.isfinite(a) and abs(a - b) < 0.02  # noqa: E731
    rows_sum_to_1 = (
        out.dim() >= 2
        and out.shape[-1] > 1
        and bool((out >= 0).all())
        and bool(torch.allclose(out.sum(-1), torch.ones(()), atol=1e-3))
    )
    if rows_sum_to_1:
        what = "each output row sums to 1: a softmax applied inside the model"
    elif near(lo, 0.0) and near(hi, 1.0):
        what = "outputs in [0, 1]: a sigmoid after the last layer?"
    elif near(lo, -1.0) and near(hi, 1.0):
        what = "outputs in [-1, 1]: a tanh after the last layer?"
    elif near(lo, 0.0):
        what = "nothing below 0: a ReLU (or softplus, exp) after the last layer?"
    else:
        what = "an activation or a clamp after the last layer bounds the output"
    if classification:
        return f"{what}. The loss expects unbounded logits: return the last Linear's output"
    return f"{what}. A regression head ends in a plain Linear (put the bias at the target mean)"


def edges_figure(lo: list[float], hi: list[float], y_lo: float, y_hi: float, label: str) -> Figure:
    """The outputs' lowest and highest entry per step of the fit, the targets' range dashed."""
    fig, ax = plots.figure()
    steps = np.arange(len(lo))
    ax.fill_between(steps, lo, hi, color="tab:blue", alpha=0.25, label=f"{label} range")
    ax.plot(steps, lo, color="tab:blue", lw=1)
    ax.plot(steps, hi, color="tab:blue", lw=1)
    if math.isfinite(y_lo) and math.isfinite(y_hi):
        ax.axhline(y_lo, color="tab:red", ls="--", lw=1, label="targets' min / max")
        ax.axhline(y_hi, color="tab:red", ls="--", lw=1)
    ax.set(title="output range during a short fit on one batch", xlabel="step", ylabel=label)
    ax.legend(fontsize=8)
    return fig


@dataclass
class Judged:
    lo: float  # the bound below (-inf: the lower edge still moves)
    hi: float
    lo_share: float  # the last window's move / the one before
    hi_share: float
    cost: Cost
    detail: str  # what the bound leaves out, in the user's terms
    y_lo: float = math.nan  # the training targets' range (regression)
    y_hi: float = math.nan

    @property
    def edges(self) -> list[str]:
        return [n for n, v in (("lower", self.lo), ("upper", self.hi)) if math.isfinite(v)]


def _judge(ctx: Context, fit: Fit, b: Batch, p: OutputRangeParams) -> Judged:
    """Which edges stalled, and what confining the outputs to them costs."""
    lo, lo_share = _limit(fit.lo, -1.0)
    hi, hi_share = _limit(fit.hi, 1.0)
    j = Judged(lo, hi, lo_share, hi_share, Cost(0.0, 0.0, 0.0), "")
    steps = len(fit.losses)
    if not j.edges:
        return j
    if ctx.task.classification:
        j.cost = _classification_cost(ctx, fit.out, b.y, lo, hi, p)
        j.detail = (
            f"logits never leave [{lo:.3g}, {hi:.3g}] after {steps} steps (where their "
            f"lowest and highest entry are heading; now [{min(fit.lo):.3g}, {max(fit.hi):.3g}])"
        )
    else:
        j.cost, y = _regression_cost(ctx, fit.out, lo, hi)
        j.y_lo, j.y_hi = float(y.min()), float(y.max())
        j.detail = _regression_text(y, j, steps, p)
    return j


def _message(j: Judged, fit: Fit, label: str, threshold: str, p: OutputRangeParams) -> str:
    said = f"{label}s span [{min(fit.lo):.3g}, {max(fit.hi):.3g}] after {len(fit.losses)} steps"
    if j.cost.ratio > p.max_loss_ratio:
        c = j.cost
        return (
            f"{j.detail}, so the loss cannot go below {c.bounded:.3g} (prior {c.reference:.3g}, "
            f"floor {c.floor:.3g}: {c.ratio:.0%} of the way, expected {threshold}): "
            f"{_hint(fit.out, j.lo, j.hi, label == 'logit')}"
        )
    if j.edges:
        return (
            f"{said}; the {' and '.join(j.edges)} edge slowed down, but the targets need no "
            f"more (confined there, the loss loses {j.cost.ratio:.1%} of the prior's gap; "
            f"{threshold})"
        )
    return f"{said}, both edges still widening: nothing caps the {label}s"


@register("output_range", OutputRangeParams, fast=True)
def output_range(ctx: Context, p: OutputRangeParams) -> CheckResult:
    """The outputs can reach the targets: no activation caps the head's range."""
    model = ctx.new_model()
    require_trainable(model, "output_range")
    b = next(ctx.train_batches(_streams.OUTPUT_RANGE, batch_size=p.n_examples))
    opt = ctx.optimizer(model)
    fit = Fit([], [], [], torch.empty(0))
    _fit(ctx, model, opt, b, p.steps, fit)
    j = _judge(ctx, fit, b, p)
    if j.cost.ratio > p.max_loss_ratio and p.extend_steps > 0:
        # an edge that slowed while it still costs: a clean head that decelerates as its
        # batch is fit widens again given time, a bounded one does not
        _fit(ctx, model, opt, b, p.extend_steps, fit)
        j = _judge(ctx, fit, b, p)
    label = "logit" if ctx.task.classification else "prediction"
    threshold = f"bounded loss <= floor + {p.max_loss_ratio:g} x (prior - floor)"
    metrics = {
        "low_edge": min(fit.lo),
        "high_edge": max(fit.hi),
        "low_edge_move_ratio": j.lo_share,
        "high_edge_move_ratio": j.hi_share,
        "low_limit": j.lo,
        "high_limit": j.hi,
        "steps": float(len(fit.losses)),
        "loss_ratio": j.cost.ratio,
    }
    if j.edges:
        metrics.update(
            bounded_loss=j.cost.bounded, floor_loss=j.cost.floor, reference_loss=j.cost.reference
        )
    status = Status.FAIL if j.cost.ratio > p.max_loss_ratio else Status.PASS
    figure = plots.deferred(edges_figure, fit.lo, fit.hi, j.y_lo, j.y_hi, label)
    return CheckResult(
        "output_range",
        status,
        _message(j, fit, label, threshold, p),
        metrics=metrics,
        series={"low_edge": list(enumerate(fit.lo)), "high_edge": list(enumerate(fit.hi))},
        figures={"edges": figure},
        value=j.cost.ratio,
        threshold=threshold,
    )
