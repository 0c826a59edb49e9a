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
and is judged again, then the fit doubles (up to ``extend_to``) until a doubling leaves the
cost where it was: the bound holds, a fail. A clean head that merely slowed keeps cutting the
cost as it trains; at the cap it warns with what it measured, it does not fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._common import require_trainable
from trackcheck.checks._shared._domain import domain_note, logit_view, output_domain, to_domain
from trackcheck.checks._shared._floor import (
    best_output,
    box,
    constant_output,
    corners,
    domain_loss,
    mean_loss,
)
from trackcheck.checks._shared._trajectory import of_run
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
    # ...and again, doubling the fit each time, up to this many steps in all: a verdict
    # needs the bound to hold. An edge that is a bound (ReLU, sigmoid, softmax) costs the
    # same after twice the steps; a slow head's cost falls as it trains (the quickstart MLP
    # at SGD 1e-3, a polynomial fit by its own SGD loop). Past the cap, still undecided:
    # a warning with what was measured, not a fail
    extend_to: int = 384
    # the bound holds when a doubling of the fit cut its cost by less than this share
    # (a ReLU or softmax head: 0%, the limit does not move; measured in the tests)
    settle: float = 0.1
    # ...over this many doublings in a row (48 -> 96 -> 192 steps at most): one can be a
    # lull (pytorch/examples' polynomial fit by its own SGD on smooth L1: its lower edge
    # rests from step 24 to 48, costing 6.3% both times, and moves on later)
    settle_rounds: int = 2
    # a doubling happens only while the fit moves: the run's second half lowered its best
    # loss by at least this share of the prior's gap (as overfit_batch.min_progress)
    min_progress: float = 1e-3
    # ...and the fit uses what the range allows: its loss has come at least this close to
    # the range's best (a share of the prior's distance to it). A ReLU/softmax/sigmoid head
    # gets there within 48 steps (measured in the tests, see _used); a net on a plateau
    # (d2l's NiN at SGD 0.1 sits at ln 10 for hundreds of steps) is still at the prior, and
    # its stalled edge says nothing about a bound
    pin_share: float = 0.5
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
    out: Tensor  # the last output (CPU, float), read as logits
    domain: str = "logits"  # what the loss reads the outputs as; edges are taken in logits


def _fit(ctx: Context, model: nn.Module, opt: Any, b: Batch, steps: int, fit: Fit) -> None:
    """``steps`` more training steps on batch ``b``, the output's extremes at each (the
    record taken after the last step is replaced when the fit goes on)."""
    model.train()
    if fit.losses:
        fit.lo.pop(), fit.hi.pop()

    def record(out: Tensor) -> None:
        o = logit_view(ctx, out.detach().float(), fit.domain)
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
        raw = ctx.forward(model, b.x)
        out = ctx.pipeline.like(raw.detach().float(), raw)  # loss_takes: whole keeps the rest
    record(out)
    fit.out = logit_view(ctx, out, fit.domain)
    fit.out = ctx.pipeline.like(fit.out.cpu(), fit.out)


def _limit(values: list[float], sign: float) -> tuple[float, float]:
    """(where the edge is heading, its last window's move / the one before) for the running
    extreme of ``sign * values`` (sign -1: the lower edge, moving down), over 4 windows.

    Moves that shrink by a ratio r < 1 per window are a geometric tail: the edge still has
    ``last * r / (1 - r)`` to go, its limit. A sigmoid's or softmax's edge creeps to its
    asymptote this way; a ReLU's stays put (r = 0, the limit is where it is); a plain
    Linear head's keeps its pace or speeds up (r >= 1, no limit: inf)."""
    env = np.maximum.accumulate(sign * np.asarray(values, dtype=np.float64))
    if not np.all(np.isfinite(env)) or len(env) < 5:
        return sign * math.inf, math.nan
    w = (len(env) - 1) // 4
    prev, last = env[-1 - w] - env[-1 - 2 * w], env[-1] - env[-1 - w]
    r = last / prev if prev > 0 else (0.0 if last <= 0 else math.inf)
    if r >= 1:
        return sign * math.inf, float(r)  # no limit: -inf for the lower edge
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


def _regression_cost(
    ctx: Context, out: Tensor, y: Tensor, lo: float, hi: float
) -> tuple[Cost, Tensor]:
    """The fit batch's targets ``y`` clamped into [lo, hi]: the best a bounded head can
    predict for them (for any loss that grows with the distance to the target). The batch's
    own targets, not the training set's: the fit pulls the outputs only towards these, and
    heavy-tailed targets (pytorch/examples' polynomial fit, x^4 features) put the training
    set's top 1% far beyond any 16 examples. Returns (cost, targets)."""
    y = y.float().to(ctx.device)
    like = ctx.pipeline.like(out.to(ctx.device), out)
    shaped = lambda v: ctx.pipeline.like(_shaped(v, like), like)  # noqa: E731 - and the rest
    cost = Cost(
        bounded=mean_loss(ctx, shaped(y.clamp(lo, hi)), y)[0],
        floor=mean_loss(ctx, shaped(y), y)[0],
        reference=mean_loss(ctx, constant_output(ctx, shaped(y), ctx.prior), y)[0],
    )
    return cost, y.cpu()


def _classification_cost(
    ctx: Context, out: Tensor, y: Tensor, lo: float, hi: float, p: OutputRangeParams, domain: str
) -> Cost:
    """The batch's best loss with every logit inside [lo, hi]: in closed form for the
    task's loss, by Adam on a free tensor for the user's own (label smoothing moves it),
    the logits mapped into the loss's ``domain``."""
    out = ctx.pipeline.like(out.to(ctx.device), out)  # loss_takes: whole: the rest follows
    reference = domain_loss(ctx, constant_output(ctx, out, ctx.prior), y, domain)[0]
    if not callable(ctx.pipeline.loss):
        wide = p.floor_steps * p.floor_lr  # as far as best_output lets a logit travel
        lo_c, hi_c = max(lo, -wide), min(hi, wide)
        with torch.no_grad():
            bounded = float(ctx.loss(corners(ctx, out, y, lo_c, hi_c), y))
            floor = float(ctx.loss(corners(ctx, out, y, -wide, wide), y))
        return Cost(bounded, floor, reference)
    inside, zero = box(lo, hi), torch.zeros_like(out)
    like = ctx.pipeline.like
    confined = lambda z: ctx.loss(like(to_domain(ctx, inside(z), domain), out), y)  # noqa: E731
    free = lambda o: ctx.loss(like(to_domain(ctx, o, domain), out), y)  # noqa: E731
    return Cost(
        bounded=best_output(confined, zero, p.floor_steps, p.floor_lr)[0],
        floor=best_output(free, zero, p.floor_steps, p.floor_lr)[0],
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
    return _judge_at(ctx, fit, b, p, (lo, hi, lo_share, hi_share))


def _judge_at(
    ctx: Context, fit: Fit, b: Batch, p: OutputRangeParams, at: tuple[float, float, float, float]
) -> Judged:
    """:func:`_judge` with the edges' limits given: (lo, hi, their move ratios)."""
    lo, hi, lo_share, hi_share = at
    j = Judged(lo, hi, lo_share, hi_share, Cost(0.0, 0.0, 0.0), "")
    steps = len(fit.losses)
    if not j.edges:
        return j
    if ctx.task.classification:
        j.cost = _classification_cost(ctx, fit.out, b.y, lo, hi, p, fit.domain)
        j.detail = (
            f"logits never leave [{lo:.3g}, {hi:.3g}] after {steps} steps (where their "
            f"lowest and highest entry are heading; now [{min(fit.lo):.3g}, {max(fit.hi):.3g}])"
            f"{domain_note(fit.domain)}"
        )
    else:
        j.cost, y = _regression_cost(ctx, fit.out, b.y, lo, hi)
        j.y_lo, j.y_hi = float(y.min()), float(y.max())
        j.detail = _regression_text(y, j, steps, p)
    return j


def _clamped(ctx: Context, fit: Fit, b: Batch, p: OutputRangeParams) -> Judged | None:
    """The edges that are clamps, judged alone: an edge whose extreme did not move in the
    second half of the fit (hundreds of steps at the cap) while several outputs sit exactly
    on it (a ReLU's 0, a clamp's value; a
    continuous output lands on one float twice by chance only). Proven bounds, whatever
    the other edge does (a net on a plateau leaves its other edge stalled too). None when
    no edge is one."""
    out = fit.out.reshape(-1)

    def clamp(values: list[float], sign: float) -> float:
        env = sign * np.maximum.accumulate(sign * np.asarray(values, dtype=np.float64))
        edge = env[-1]
        moved = bool(env[len(env) // 2] != edge)  # it moved in the fit's second half
        on_it = int((out == float(edge)).sum()) if np.isfinite(edge) else 0
        return float(edge) if not moved and on_it >= 2 else sign * math.inf

    lo, hi = clamp(fit.lo, -1.0), clamp(fit.hi, 1.0)
    if not (math.isfinite(lo) or math.isfinite(hi)):
        return None
    return _judge_at(ctx, fit, b, p, (lo, hi, 0.0, 0.0))


def _settle(
    ctx: Context,
    model: nn.Module,
    opt: Any,
    b: Batch,
    p: OutputRangeParams,
    fit: Fit,
    prev: Judged,
) -> tuple[Judged, bool]:
    """Judge the run; while the bound still costs, double the fit (up to ``extend_to``
    steps) until a doubling leaves the cost where it was (the bound holds: True) or the cap
    is reached (undecided: False)."""
    j, held = _judge(ctx, fit, b, p), 0
    while j.cost.ratio > p.max_loss_ratio:
        if j.cost.ratio >= (1 - p.settle) * prev.cost.ratio and _used(fit, j) <= p.pin_share:
            held += 1
            if held >= p.settle_rounds:
                return j, True
        else:
            held = 0
        n = len(fit.losses)
        if n >= p.extend_to or not math.isfinite(fit.losses[-1]) or not _moving(fit, j, p):
            return j, False
        prev = j
        _fit(ctx, model, opt, b, min(n, p.extend_to - n), fit)
        j = _judge(ctx, fit, b, p)
    return j, False


def _moving(fit: Fit, j: Judged, p: OutputRangeParams) -> bool:
    """The fit still moves: the second half of the run lowered its best loss by at least
    min_progress of the prior's gap (a run that stands still says nothing with more steps)."""
    half = len(fit.losses) // 2
    finite = lambda v: [x for x in v if math.isfinite(x)]  # noqa: E731
    before, after = finite(fit.losses[:half]), finite(fit.losses[half:])
    if not before or not after:
        return False
    gap = max(j.cost.reference - j.cost.floor, 1e-12)
    return min(before) - min(after) >= p.min_progress * gap


def _used(fit: Fit, j: Judged) -> float:
    """How far the fit's loss (mean of its last quarter) still is from the best loss the
    range allows, as a share of the prior's distance to it: 0 when the model gets all its
    range allows (the range stops it), 1 when it is still at the prior (a plateau: nothing
    says the range is what holds it)."""
    tail = [v for v in fit.losses[-max(1, len(fit.losses) // 4) :] if math.isfinite(v)]
    gap = j.cost.reference - j.cost.bounded
    if not tail or gap <= 0:
        return 1.0
    return max(sum(tail) / len(tail) - j.cost.bounded, 0.0) / gap


def _message(
    j: Judged, fit: Fit, label: str, threshold: str, p: OutputRangeParams, settled: bool
) -> str:
    said = f"{label}s span [{min(fit.lo):.3g}, {max(fit.hi):.3g}] after {len(fit.losses)} steps"
    if j.cost.ratio > p.max_loss_ratio and not settled:
        c = j.cost
        return (
            f"undecided after {len(fit.losses)} steps (the cap, extend_to): {j.detail}; confined "
            f"there the loss could not go below {c.bounded:.3g} (prior {c.reference:.3g}, floor "
            f"{c.floor:.3g}: {c.ratio:.0%} of the way, expected {threshold}), but each doubling "
            "of the fit still cut that cost by more than the settle share: a slow head (a low "
            "lr, plain SGD) rather than a bound. Train longer or raise the lr to confirm"
        )
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


@torch.no_grad()
def _domain_of(ctx: Context, model: nn.Module, b: Batch) -> str:
    """The loss's output domain (``_domain``), from the untrained model's output on ``b``
    in eval mode (a train-mode forward would move BatchNorm statistics before the fit)."""
    was = model.training
    model.eval()
    try:
        return output_domain(ctx, ctx.forward(model, b.x), b.y)
    finally:
        model.train(was)


@register("output_range", OutputRangeParams, fast=True)
def output_range(ctx: Context, p: OutputRangeParams) -> CheckResult:
    """The outputs can reach the targets: no activation caps the head's range."""
    model = ctx.new_model()
    require_trainable(model, "output_range")
    b = next(ctx.train_batches(_streams.OUTPUT_RANGE, batch_size=p.n_examples))
    opt = ctx.optimizer(model)
    fit = Fit([], [], [], torch.empty(0), _domain_of(ctx, model, b))
    _fit(ctx, model, opt, b, p.steps, fit)
    j = _judge(ctx, fit, b, p)
    settled = False
    if j.cost.ratio > p.max_loss_ratio and p.extend_steps > 0:
        # an edge that slowed while it still costs: a clean head that decelerates as its
        # batch is fit widens again given time, a bounded one does not
        _fit(ctx, model, opt, b, p.extend_steps, fit)
        j, settled = _settle(ctx, model, opt, b, p, fit, j)
        if j.cost.ratio > p.max_loss_ratio and not settled:
            clamped = _clamped(ctx, fit, b, p)  # undecided: a clamp is proof on its own
            if clamped is not None and clamped.cost.ratio > p.max_loss_ratio:
                j, settled = clamped, True
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
        "range_unused": _used(fit, j),
    }
    if j.edges:
        metrics.update(
            bounded_loss=j.cost.bounded, floor_loss=j.cost.floor, reference_loss=j.cost.reference
        )
    metrics["settled"] = float(settled)
    status = Status.PASS
    if j.cost.ratio > p.max_loss_ratio:
        status = Status.FAIL if settled else Status.WARN
    message = _message(j, fit, label, threshold, p, settled)
    # the shared judgement of the run: outputs that exploded reach any range, and say so
    traj = of_run(ctx, fit.losses, fit.out, b.y)
    metrics.update(traj.metrics())
    if traj.verdict in ("nonfinite", "exploded"):
        lr = opt.param_groups[0].get("lr") if opt.param_groups else None
        at = f" at lr {lr:.3g}" if isinstance(lr, int | float) else ""
        status, message = (
            Status.FAIL,
            (
                f"{traj.why} after {len(fit.losses)} steps{at}: the weights blew up, so the range "
                "they reach says nothing about the head. The learning rate is far too high: lower "
                "it (lr_range measures the usable range)"
            ),
        )
    figure = plots.deferred(edges_figure, fit.lo, fit.hi, j.y_lo, j.y_hi, label)
    return CheckResult(
        "output_range",
        status,
        message,
        metrics=metrics,
        series={"low_edge": list(enumerate(fit.lo)), "high_edge": list(enumerate(fit.hi))},
        figures={"edges": figure},
        value=j.cost.ratio,
        threshold=threshold,
    )
