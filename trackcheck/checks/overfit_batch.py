"""overfit one batch: a few examples reach their loss's floor; labels and predictions overlaid.

"Near zero" is measured from the floor of the loss in use (the best any output reaches on
the batch), so a loss with a floor above zero (label smoothing) can be fit too.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._common import outputs_at_init, require_trainable, sample_targets
from trackcheck.checks._shared._domain import logit_view, output_domain, to_domain
from trackcheck.checks._shared._floor import (
    best_output,
    box,
    constant_output,
    corners,
    domain_loss,
)
from trackcheck.checks._shared._park import HOST, move
from trackcheck.checks._shared._trajectory import DEFAULT as TRAJECTORY
from trackcheck.checks._shared._trajectory import Trajectory, UpdateMeter, of_run
from trackcheck.checks.gradient_flow import with_finding_note
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import IGNORE_INDEX, primary, replace_primary, valid_targets
from trackcheck.registry import register
from trackcheck.training import repeat, train_steps

# a peak this many times the first loss above it is a divergence (_diverged)
SPIKE_FACTOR = 10.0


@dataclass
class OverfitBatchParams:
    n_examples: int = 4  # Karpathy: "as little as two"
    max_steps: int = 300
    # "near zero", measured from the loss's own floor: the model fits when
    # best - floor <= max_loss_ratio * (reference - floor), the reference being the loss of
    # the prior in the bias (H(labels), Var(y) for the task's losses). 0.05: 95% of the
    # way from a constant predictor to the best any output can do.
    max_loss_ratio: float = 0.05
    lr: float | None = None  # None: the stage's optimizer as configured (optim.*)
    # When the batch is not fit, fit it once more from the same init at another lr (0: no
    # retry): lr / this factor when the loss went back up from its best (too high: Adam at
    # 3e-3 on a GPT-2 of width 256 spikes), lr x this factor when it was still at its best
    # at the end (too low: Adam at 1e-4 on the shipped resnet is still descending after 300
    # steps). A batch that fits at the other lr has its model, loss and optimizer wired: a
    # tuning matter that warns, not a bug that fails. Costs a second fit on failure only;
    # a run unfit at max_steps that would be extended (below) and whose loss rose on some
    # step tries lr / this factor first, for max_steps: the GPT-2 above is still not fit
    # after 1200 steps at 3e-3 (its loss bouncing between 0.27 and 1.8), and fits in 54
    # steps at 3e-4.
    retry_lr_factor: float = 10.0
    # The floor: the lowest loss a free output tensor (shaped like the model's output on
    # the batch) reaches against the loss in use, by Adam, with no model. 0 for plain
    # cross-entropy, MSE, BCE; the entropy of the smoothed target for label smoothing (0.500
    # for eps 0.1 on 10 classes); it errs high (lenient) when not converged, never low.
    # Adam moves each entry about floor_lr per step: 300 x 0.1 lets a logit travel 30, a
    # cross-entropy of e^-30; regression starts at the targets themselves.
    floor_steps: int = 300
    floor_lr: float = 0.1
    # training targets the reference loss is averaged over (a random sample, seeded)
    reference_examples: int = 1024
    # The cap: a run not fit in max_steps that neither diverged nor sits at the best its
    # output range allows goes on, up to this many steps in all, and then warns with what it
    # measured. Slow correct nets need it: d2l's sigmoid LeNet (SGD 0.9) and NiN (SGD 0.1)
    # sit on plateaus for 1000-1500 steps on 4 digits (seeds 0-2; some longer still).
    extend_to: int = 1200
    # A fit that stops at the best its outputs' current range allows (within this share of
    # the prior's gap, like max_loss_ratio), while that best is above the target, is held by
    # a bounded head: it fails at once, more steps do not move a bound
    pin_ratio: float = 0.05
    # ...and only once the outputs (as logits) span at least this much: the narrowest bound
    # the diagnosis names is a softmax or sigmoid read as logits, [0, 1], which a fit pushes
    # its outputs across (SoftmaxBeforeCE on digits: [6e-13, 1] after 100 steps); outputs spread
    # less than half of it have not met a bound but barely moved from init: the lr or the
    # time holds them (BERT from random init at 2e-5: [-0.009, 0.0195] after 300 steps,
    # DistilBERT at 5e-5: 0.26), a matter of steps, not of wiring
    bound_span: float = 0.5
    # ...and, after an extended run, only when their span grew by less than this share over
    # the run's last quarter: a bound holds the outputs where they are (SoftmaxBeforeCE sits
    # at [0, 1]'s corners), while a slow learner still widens them (a reloaded BERT at AdamW
    # 2e-5 spans [-0.81, 0.78] at 1200 steps and its loss still falls; Adam's roughly
    # constant step widens a span ~33% over the last quarter of a run from near zero)
    bound_growth: float = 0.1
    # the run goes on past max_steps only while it moves: its last quarter lowered its best
    # by at least this share of the way from the prior to the target (SGD at 1e-12 moves
    # it by ~1e-12; the test MLP at SGD 1e-2 by 20%). A run that does not move warns at
    # max_steps: more steps of nothing are no evidence either way
    min_progress: float = 1e-3
    # A user's loss has no floor when Adam on free outputs lowers it, below 0, in the second
    # half of the floor search by at least this share of what it did in the first half. A
    # loss bounded below slows as it nears its floor (cross-entropy's fall halves about every
    # logit unit: label-smoothed CE goes 2.30 -> 0.5003 -> 0.5000, a second half of 0.02%);
    # one linear in the output (F.nll_loss on raw logits: -o[y]) keeps Adam's constant pace,
    # 100%. 0.5 sits between them with wide margins.
    unbounded_pace: float = 0.5
    # "fit" also means each example predicted as its label (regression: within the error
    # the loss target allows one example). At the loss target a long sequence's mean can
    # hide a wrong position or two: up to this many more steps (one forward each to look)
    # let a correct model settle them, within max_steps; a model whose every step overshoots
    # (an lr far too high: the loss 0 at one step, a wrong label after the next) does not
    settle_steps: int = 20


@register("overfit_batch", OverfitBatchParams, fast=True)
def overfit_batch(ctx: Context, p: OverfitBatchParams) -> CheckResult:
    """A few examples can be fit to near-zero loss (the model, loss and optimizer are wired)."""
    model = ctx.new_model()
    require_trainable(model, "overfit_batch")
    batch = ctx.head("train", p.n_examples)
    x, y = batch
    with torch.no_grad():
        out0 = ctx.forward(model, x).float()  # the output's shape on this batch
    domain = output_domain(ctx, out0, y)
    wiring = _wiring(ctx, out0, y, p, domain)
    if wiring:  # the loss itself cannot train this batch: no fit is meaningful
        metrics = {"loss_wiring": 1.0}  # lr_range: not an lr matter
        return CheckResult("overfit_batch", Status.FAIL, wiring, metrics=metrics)
    out0 = logit_view(ctx, out0, domain)  # floor and reference are built as logits
    groups = _groups(ctx, model, x, y, out0)
    floor = _floor(ctx, out0, y, p, domain, groups)
    reference = _reference(ctx, model, out0, y, p.reference_examples, domain)
    target = floor + p.max_loss_ratio * max(reference - floor, 0.0)
    opt = _optimizer(ctx, model, p.lr)
    meter = UpdateMeter(model)  # each step's size against the weights' (the trajectory's)
    losses = _fit(ctx, model, opt, batch, target, p.max_steps, [], meter)
    pinned = _pinned(ctx, model, batch, losses, floor, reference, target, p, domain)
    moving = _progress(losses) >= p.min_progress * max(reference - target, 1e-12)
    lower: _Retry | None = None
    slow = (
        _best(losses) > target
        and pinned is None
        and moving
        and not _diverging(ctx, model, batch, losses, meter)
    )
    if slow and _rose(losses):
        # not fit yet, not held back by its output range, not diverging: an lr too high to
        # hold a fit (a GPT-2 at Adam 3e-3 descends in jumps), or slow, or on a plateau a
        # saddle may explain (sigmoid LeNet, NiN at their book lr). A run whose loss went
        # up on some step may be the first: the lower lr is tried before the extension, and
        # when it fits within the budget the verdict is in (a warning naming the lr), while
        # the configured lr's run may take the whole cap. A loss that fell on every step (a
        # plain slow descent: SGD on the test MLP) would only fall slower at a lower lr.
        lower = _lower_first(ctx, model, opt, batch, target, p, domain)
    if slow and not (lower is not None and lower.fits(target)):
        # more steps at the configured lr
        _fit(ctx, model, opt, batch, target, (3 * p.extend_to) // 4 - len(losses), losses, meter)
        span = _span(ctx, model, batch, domain)  # at three quarters of the cap
        _fit(ctx, model, opt, batch, target, p.extend_to - len(losses), losses, meter)
        pinned = _pinned(ctx, model, batch, losses, floor, reference, target, p, domain)
        if pinned is not None and _span(ctx, model, batch, domain) > (1 + p.bound_growth) * span:
            pinned = None  # a bound does not move: outputs still spreading are held by time
    raw = _settle(ctx, model, opt, batch, target, p, losses, meter)  # in the loss's domain
    out = logit_view(ctx, raw, domain)
    best = _best(losses)
    traj = of_run(ctx, losses, out, y, meter)
    figure = _overlay(ctx, out.cpu(), y.cpu(), best)
    result = _judge(p, len(y), losses, best, floor, reference, target, figure, groups)
    if p.lr is None:  # the configured lr's run: what lr_range reads
        result.metrics.update(traj.metrics())
    lr = _lr_of(opt)
    if result.status == Status.PASS and (unfit := _unfit(ctx, traj, raw, y, p, lr, target)):
        result.status = Status.FAIL
        result.message = (
            f"{len(y)} examples reached loss {best:.3g} in {len(losses)} steps, {unfit}"
        )
    if pinned is not None and result.status == Status.FAIL:
        result.metrics["range_floor_loss"] = pinned[0]
        result.message += pinned[1]
    if result.status == Status.FAIL and pinned is None:
        if p.retry_lr_factor > 0 and lr:
            up = _descending(losses) and not traj.diverging
            if lower is not None and (lower.fits(target) or not up):
                retry = lower  # already run at the budget
            else:
                del model, opt, out, raw  # one model at a time
                f = p.retry_lr_factor
                retry = _other_lr(ctx, batch, target, p, domain, lr * f if up else lr / f)
            _judge_retry(result, losses, lr, (retry.losses, retry.lr), target, retry.unfit)
        if (
            result.status == Status.FAIL
            and best > target  # not reached: a reached target with wrong labels stays a FAIL
            and not _diverged(losses)
            and not traj.diverging
        ):
            _undecided(result, losses, target, p, lr)
    return with_finding_note(ctx, result)  # a FAIL points to gradient_flow's finding


@dataclass
class _Retry:
    """A fit of the batch from the same init at another lr."""

    losses: list[float]
    lr: float
    unfit: str  # why it is not fit although its loss reached the target ('' when it is)

    def fits(self, target: float) -> bool:
        return _best(self.losses) <= target and not self.unfit


def _other_lr(
    ctx: Context, batch: Any, target: float, p: OverfitBatchParams, domain: str, lr: float
) -> _Retry:
    """A fresh model (the same seed: the same init) fit at ``lr`` for ``max_steps``,
    settled and judged as the configured lr's run is."""
    model = ctx.new_model()
    opt, meter = _optimizer(ctx, model, lr), UpdateMeter(model)
    losses = _fit(ctx, model, opt, batch, target, p.max_steps, [], meter)
    raw = _settle(ctx, model, opt, batch, target, p, losses, meter)
    traj = of_run(ctx, losses, logit_view(ctx, raw, domain), batch.y, meter)
    return _Retry(losses, lr, _unfit(ctx, traj, raw, batch.y, p, lr, target))


def _lower_first(
    ctx: Context,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batch: Any,
    target: float,
    p: OverfitBatchParams,
    domain: str,
) -> _Retry | None:
    """:func:`_other_lr` at the configured lr / ``retry_lr_factor``, the configured run
    parked in host memory meanwhile (checks/_shared/_park.py); None without a retry."""
    lr = _lr_of(opt)
    if p.retry_lr_factor <= 0 or not lr:
        return None
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    move(HOST, model, opt)
    # torch's random state forked: the configured run's further steps draw the dropout masks
    # they would have drawn without this fit (which reseeds to build its model)
    with torch.random.fork_rng(devices=devices):
        try:
            return _other_lr(ctx, batch, target, p, domain, lr / p.retry_lr_factor)
        finally:
            move(ctx.device, model, opt)


def _unfit(
    ctx: Context,
    traj: Trajectory,
    out: Tensor,
    y: Tensor,
    p: OverfitBatchParams,
    lr: float | None,
    target: float,
) -> str:
    """Why a batch whose loss reached the target is not fit ('' when it is): "fit" means
    finite, bounded outputs (the shared trajectory judgement) and each example predicted
    as its label (regression: within the tolerance the loss target implies)."""
    at = f" at lr {lr:.3g}" if lr else ""
    if traj.verdict in ("nonfinite", "exploded"):
        return (
            f"but {traj.why}{at}: the weights blew up, so a loss near its floor says nothing. "
            "The learning rate is far too high: lower it (lr_range measures the usable range)"
        )
    wrong = _mispredicted(ctx, out.float(), y, p, target)
    if wrong:
        return (
            f"but after the last step example(s) {', '.join(map(str, wrong[:8]))} are not "
            f"predicted as their label{at} (a fit predicts each example as its label): the "
            "loss jumps between steps, the learning rate is too high to hold a fit"
        )
    return ""


def _mispredicted(
    ctx: Context, out: Tensor, y: Tensor, p: OverfitBatchParams, target: float
) -> list[int]:
    """The examples of the batch whose prediction is not their label: the arg max over
    classes (logits, probabilities and log-probabilities alike); binary: the label whose
    loss is lower; a language model: none (see below); regression: an example whose own loss
    exceeds n x ``target``, the most one example can have while the batch's mean is at it."""
    name, n = ctx.task.name, len(y)
    with torch.no_grad():
        if name == "binary":
            yy = y.reshape(-1).float().to(out.device)
            one = ctx.per_example_loss(out, torch.ones_like(yy).reshape(y.shape))
            zero = ctx.per_example_loss(out, torch.zeros_like(yy).reshape(y.shape))
            bad = (one < zero).float().cpu() != (y.reshape(-1).cpu() > 0.5).float()
        elif name == "multiclass":
            keep = valid_targets(y).cpu()
            pred = out.reshape(n, -1).argmax(-1).cpu()
            bad = keep & (pred != y.cpu().long())
        elif ctx.task.per_position:
            # not judged label by label: which positions a model can tell apart depends on
            # what it sees (a bigram table sees one token, _groups), and a mean loss at its
            # target can hide a position or two on a correct GPT-2 with padding; a language
            # model's blow-up is the trajectory's to judge (outputs, steps, losses)
            return []
        else:
            if out.numel() != y.numel():  # not one prediction per target: nothing to compare
                return []
            # one example's own loss (over all its outputs: a super-resolution image is one
            # example of many pixels): a mean at the target allows one example n x the target
            per = ctx.per_example_loss(out, y).double().cpu().reshape(n, -1).mean(-1)
            bad = per > n * target + 1e-12
    return [int(i) for i in torch.nonzero(bad.reshape(n, -1).any(-1)).reshape(-1)]


def _optimizer(ctx: Context, model: torch.nn.Module, lr: float | None) -> torch.optim.Optimizer:
    opt = ctx.optimizer(model)
    if lr is not None:
        for g in opt.param_groups:
            g["lr"] = lr
    return opt


def _lr_of(opt: torch.optim.Optimizer) -> float | None:
    used = opt.param_groups[0].get("lr")
    return float(used) if isinstance(used, int | float) else None


def _fit(
    ctx: Context,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batch: Any,
    target: float,
    steps: int,
    losses: list[float],
    meter: UpdateMeter,
) -> list[float]:
    """Train ``model`` on ``batch`` until its loss reaches ``target`` (at most ``steps``
    more), appending to ``losses`` (a run goes on where it stopped); ``meter`` sees each
    step."""

    def on_step(_step: int, loss: float) -> bool:
        meter()
        return loss <= target

    if steps > 0:
        losses += train_steps(ctx, model, repeat(batch), steps, opt, on_step=on_step)
    return losses


def _settle(
    ctx: Context,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batch: Any,
    target: float,
    p: OverfitBatchParams,
    losses: list[float],
    meter: UpdateMeter,
) -> Tensor:
    """The model's output on the batch (train mode, as trained; in the loss's domain) after
    at most ``settle_steps`` more steps, within the run's cap, that let a fit at the target
    predict each example as its label (a long sequence's mean loss hides a position or
    two); a model whose steps overshoot does not settle."""
    with torch.no_grad():
        out = ctx.forward(model, batch.x).float()
    cap = max(p.max_steps, p.extend_to) - len(losses)
    for _ in range(min(p.settle_steps, cap) if losses and losses[-1] <= target else 0):
        if not _mispredicted(ctx, out, batch.y, p, target):
            break
        losses += train_steps(ctx, model, repeat(batch), 1, opt, on_step=meter)
        with torch.no_grad():
            out = ctx.forward(model, batch.x).float()
    return out


def _diverging(
    ctx: Context, model: torch.nn.Module, batch: Any, losses: list[float], meter: UpdateMeter
) -> bool:
    """The run so far diverged, by its own losses (:func:`_diverged`) or by the shared
    trajectory judgement (outputs that exploded, a step that replaced the weights)."""
    if _diverged(losses):
        return True
    with torch.no_grad():
        out = ctx.forward(model, batch.x).float()
    return of_run(ctx, losses, out, batch.y, meter).diverging


def _progress(losses: list[float]) -> float:
    """How much the run's last quarter lowered its best loss."""
    n = max(1, len(losses) // 4)
    before, last = _best(losses[:-n]), _best(losses[-n:])
    return before - last if math.isfinite(before) and math.isfinite(last) else 0.0


def _diverged(losses: list[float]) -> bool:
    """The run's own numbers say it diverged: a non-finite loss, a peak an order of
    magnitude above the first step's loss (a fit of one fixed batch has no reason to
    rise so far; SGD at lr 10 on the test MLP peaks at 1e17), or a loss that rose (it
    went the wrong way)."""
    if not losses or not all(math.isfinite(v) for v in losses):
        return bool(losses)
    start, q = losses[0], len(losses) // 4
    if max(losses) > start + SPIKE_FACTOR * abs(start):
        return True
    # went the wrong way: the shared trajectory's "rose" (the last quarter's median above
    # every loss of the first quarter; a flat loss with dropout noise, BERT at 2e-5, sits
    # above its first step's loss half the time, which is no divergence)
    return q >= TRAJECTORY.min_quarter and sorted(losses[-q:])[q // 2] > max(losses[:q])


def _rose(losses: list[float]) -> bool:
    """The loss went up on some step. Dropout's noise does it too (a GPT-2 that fits at
    Adam 1e-3 rises on 21% of its steps, BERT on a plateau at 2e-5 on 46%, as many as a
    GPT-2 bouncing at 3e-2): only a descent that never rose is told apart, which is what
    the cost needs (a lower lr tried for nothing costs max_steps, no verdict)."""
    return any(b > a for a, b in zip(losses, losses[1:], strict=False))


def _best(losses: list[float]) -> float:
    return min((v for v in losses if math.isfinite(v)), default=float("nan"))


def _descending(losses: list[float]) -> bool:
    """The loss was descending, not spiking: the run did not diverge and its best came in
    its last quarter. (The last step alone is noisy: with dropout a net still descending
    sits above its best on most steps, and a retry would lower the lr of a net too slow.)"""
    finite = [v for v in losses if math.isfinite(v)]
    if _diverged(losses) or not finite:
        return False
    at = min(range(len(losses)), key=lambda i: losses[i])
    return at >= len(losses) - max(1, len(losses) // 4)


def _judge_retry(
    result: CheckResult,
    losses: list[float],
    lr: float,
    retry: tuple[list[float], float | None],
    target: float,
    unfit: str = "",
) -> None:
    """Fold the other lr's fit into ``result``: it fits -> the lr is wrong, not the wiring."""
    losses2, lr2 = retry
    best2 = _best(losses2)
    result.metrics.update(retry_lr=lr2 or float("nan"), retry_best_loss=best2)
    result.series["loss_retry"] = list(enumerate(losses2))
    if not best2 <= target:
        result.message += f"; at lr {lr2:.3g} too it reached only {best2:.3g}"
        return
    if unfit:
        result.message += f"; at lr {lr2:.3g} it reached {best2:.3g}, {unfit.split(': ')[0]}"
        return
    rose = max((v for v in losses if math.isfinite(v)), default=float("nan"))
    high = bool(lr2 is not None and lr2 < lr)
    way = "high" if high else "low"
    fix = "Lower it, add warmup or clipping" if high else "Raise it, or train longer"
    result.status = Status.WARN
    result.message = (
        f"at the configured lr {lr:.3g} the batch reached only {_best(losses):.3g} in "
        f"{len(losses)} steps (final loss {losses[-1]:.3g}, peak {rose:.3g}); at lr "
        f"{lr2:.3g} it fit to {best2:.3g} in {len(losses2)} steps (target <= {target:.3g}): "
        f"the model, loss and optimizer are wired; the lr is too {way} to memorise a batch"
        f" in {len(losses)} steps. {fix} (checks.lr_range.when=always measures the usable "
        "range)"
    )


def _judge(
    p: OverfitBatchParams,
    n: int,
    losses: list[float],
    best: float,
    floor: float,
    reference: float,
    target: float,
    figure: plots.Deferred,
    groups: Groups | None = None,
) -> CheckResult:
    """The run's numbers, and the verdict: did the ``n`` examples' best loss reach the
    target between the loss's floor and the prior's reference loss?"""
    steps = len(losses)
    gap = reference - floor
    metrics = {
        "best_loss": best,
        "final_loss": losses[-1] if losses else float("nan"),
        "target_loss": target,
        "floor_loss": floor,
        "reference_loss": reference,
        "steps": float(steps),
        "loss_ratio": (best - floor) / gap if gap > 0 else float("nan"),
        "budget_steps": float(p.max_steps),
    }
    series = {"loss": list(enumerate(losses))}
    threshold = (
        f"<= {target:.3g} (floor {floor:.3g} + {p.max_loss_ratio:g} x ({reference:.3g} - floor))"
    )
    status, msg = _verdict(n, best, target, steps, threshold, floor, reference)
    if groups is not None:
        metrics["indistinguishable_positions"] = float(groups.tied)
        msg += f"; {groups.why}"
    if status == Status.PASS and steps > p.max_steps:
        msg += f" (past the budget of {p.max_steps}: a slow fit, up to {p.extend_to} allowed)"
    return CheckResult(
        "overfit_batch",
        status,
        msg,
        metrics=metrics,
        series=series,
        figures={"overlay": figure},
        value=best,
        threshold=threshold,
    )


def _verdict(
    n: int, best: float, target: float, steps: int, threshold: str, floor: float, ref: float
) -> tuple[Status, str]:
    floor_note = (
        f"; the loss cannot go below {floor:.3g} on this batch (the best any output reaches: "
        "label smoothing, a weighted or bounded loss)"
        if floor > 1e-3 * max(abs(ref), 1e-12)
        else ""
    )
    if best <= target:
        return Status.PASS, (
            f"{n} examples fit to loss {best:.3g} in {steps} steps (target {threshold}){floor_note}"
        )
    return Status.FAIL, (
        f"{n} examples reached only loss {best:.3g} in {steps} steps, expected "
        f"{threshold}{floor_note}: the model cannot memorise a tiny batch. Usual causes: "
        "softmax or sigmoid applied before a loss that expects logits, a frozen or "
        "detached part of the model, labels misaligned with inputs, or a learning rate "
        "far too low/high"
    )


def _floor(
    ctx: Context,
    out0: Tensor,
    y: Tensor,
    p: OverfitBatchParams,
    domain: str,
    groups: Groups | None = None,
) -> float:
    """The lowest loss any output reaches on targets ``y``: free logits shaped like the
    model's output ``out0``, mapped into the loss's ``domain``, optimised against
    ``ctx.loss`` (the loss training uses). Positions the model cannot tell apart
    (``groups``) share one free output: the floor is then what the best model reaches."""
    if groups is not None:
        return _tied_floor(ctx, out0, y, p, domain, groups)
    start = torch.zeros_like(out0)
    if not ctx.task.classification and y.numel() == out0.numel():
        start = y.reshape(out0.shape).to(out0)  # regression: the targets are the optimum
    if not callable(ctx.pipeline.loss) and math.isfinite(float(ctx.loss(start, y))):
        # the task's own losses (cross-entropy, BCE, MSE) are >= 0 and reach 0 (in the limit
        # of large logits, or at the targets): the floor is known, no need to search for it
        return 0.0
    # loss_takes: whole: the free prediction with the model's other output elements
    objective = lambda o: ctx.loss(ctx.pipeline.like(to_domain(ctx, o, domain), out0), y)  # noqa: E731
    return best_output(objective, start, p.floor_steps, p.floor_lr)[0]


def _tied_floor(
    ctx: Context, out0: Tensor, y: Tensor, p: OverfitBatchParams, domain: str, groups: Groups
) -> float:
    """:func:`_floor` with one free output per group of indistinguishable positions: a
    table ``[G, ...]`` gathered to ``out0``'s shape (regression: starting at each group's
    mean target, the optimum of MSE)."""
    gid = groups.ids.to(out0.device)  # [B] / [B, T]: y's shape
    extra = out0.shape[y.dim() :]  # [C] / [V] / [1] / []
    start = out0.new_zeros((groups.count, *extra))
    if not ctx.task.classification:
        sums = torch.zeros(groups.count, dtype=torch.float64).index_add_(
            0, gid.reshape(-1).cpu(), y.reshape(-1).double().cpu()
        )
        counts = torch.bincount(gid.reshape(-1).cpu(), minlength=groups.count).clamp_min(1)
        start = start + (sums / counts).to(start).reshape(-1, *([1] * len(extra)))
    objective = lambda t: ctx.loss(ctx.pipeline.like(to_domain(ctx, t[gid], domain), out0), y)  # noqa: E731
    return max(best_output(objective, start, p.floor_steps, p.floor_lr)[0], 0.0)


@dataclass
class Groups:
    """Positions of the batch the model cannot tell apart: same ``ids``, same output."""

    ids: Tensor  # [B] / [B, T] (y's shape): the group of each target position
    count: int  # number of groups
    tied: int  # positions that share their group with a position of another target
    why: str  # for the message


@torch.no_grad()
def _groups(ctx: Context, model: torch.nn.Module, x: Any, y: Tensor, out0: Tensor) -> Groups | None:
    """Which target positions have the same visible input, so no model can fit them apart:
    identical examples; for a language model, positions whose context (as far back as the
    model reads: its reach, probed at init) is the same, such as position 0 of sequences
    that share a start token, or a bigram table's positions that hold the same token. None
    when every position can be told apart (or the inputs cannot be read as token ids)."""
    if out0.shape[: y.dim()] != y.shape:
        return None
    try:
        ids = primary(x)
    except Exception:  # noqa: BLE001 - inputs the probe cannot read: no grouping
        return None
    if not isinstance(ids, Tensor) or len(ids) != len(y):
        return None
    if (
        ctx.task.per_position
        and y.dim() == 2
        and ids.shape == y.shape
        and not ids.is_floating_point()
    ):
        reach = _reach(ctx, model, x, ids)
        if reach is None:
            return None
        rows = ids.cpu().tolist()
        keys = [tuple(r[max(0, t - reach + 1) : t + 1]) for r in rows for t in range(len(r))]
        why_kind = (
            "positions whose visible context is the same"
            if reach >= ids.shape[1]
            else f"positions whose last {reach} token(s) (the model's reach) are the same"
        )
    else:
        flat = ids.reshape(len(ids), -1).cpu()
        keys = [tuple(r) for r in flat.tolist()]
        keys = [k for k in keys for _ in range(y[0].numel())]
        why_kind = "identical examples"
    index: dict[tuple, int] = {}
    gid = torch.tensor([index.setdefault(k, len(index)) for k in keys]).reshape(y.shape)
    tied = _conflicting(gid, y)
    if tied == 0:
        return None
    why = (
        f"{tied} target positions share their input with a position of another target "
        f"({why_kind}): no model can fit them apart, the floor allows for it"
    )
    return Groups(gid, len(index), tied, why)


def _conflicting(gid: Tensor, y: Tensor) -> int:
    """Positions (with a target) whose group holds another target too."""
    g, t = gid.reshape(-1).tolist(), y.reshape(-1).tolist()
    seen: dict[int, set] = {}
    for a, b in zip(g, t, strict=True):
        if b != IGNORE_INDEX:
            seen.setdefault(a, set()).add(b)
    return sum(1 for a, b in zip(g, t, strict=True) if b != IGNORE_INDEX and len(seen[a]) > 1)


def _reach(ctx: Context, model: torch.nn.Module, x: Any, ids: Tensor) -> int | None:
    """How far back the model reads: 1 + the last position whose output changes when the
    first token changes (1: a bigram table, T: a full causal context), in eval mode (no
    dropout noise), on a copy whose parameters are jittered (a table initialised to zeros,
    as makemore's bigram, reads nothing until its entries differ). None when the first
    token changes no output (nothing to group by)."""
    model = _jittered(model)
    was = model.training
    model.eval()
    try:
        vocab = getattr(ctx.task, "num_classes", 0) or int(ids.max()) + 1
        other = (ids[:, :1] + 1) % max(vocab, 2)  # another first token
        ids2 = torch.cat([other, ids[:, 1:]], 1)
        x2 = replace_primary(x, ids2)  # the other inputs kept (an encoder-decoder's target)
        a, b = ctx.forward(model, x).float(), ctx.forward(model, x2).float()
    finally:
        model.train(was)
    if a.shape[:2] != ids.shape:
        return None
    scale = float(a.detach().abs().max().clamp_min(1e-12))
    changed = ((a - b).abs().reshape(*ids.shape, -1).amax(-1) > 1e-6 * scale).any(0)  # [T]
    where = changed.nonzero()
    return int(where.max()) + 1 if len(where) else None


def _jittered(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with each parameter moved by N(0, 0.01^2) (the model itself when
    it cannot be copied)."""
    try:
        probe = copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - e.g. tensors that are not graph leaves
        return model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for q in probe.parameters():
            q.add_(0.01 * torch.randn(q.shape, generator=g).to(q))
    return probe


def _span(ctx: Context, model: torch.nn.Module, batch: Any, domain: str) -> float:
    """How far the model's outputs on ``batch`` (as logits) spread: max - min."""
    with torch.no_grad():
        out = logit_view(ctx, ctx.forward(model, batch.x).float(), domain)
    return float(out.max() - out.min())


def _pinned(
    ctx: Context,
    model: torch.nn.Module,
    batch: Any,
    losses: list[float],
    floor: float,
    reference: float,
    target: float,
    p: OverfitBatchParams,
    domain: str,
) -> tuple[float, str] | None:
    """(the best loss of outputs inside the range the model's outputs span now, a note) when
    that range is what holds the fit back: the best loss reached is within pin_ratio of the
    prior's gap of that range's best, which is itself above the target (probabilities fed
    to a loss of logits sit at [0, 1]'s corners: cross-entropy 1.46 on 10 classes)."""
    best = _best(losses)
    if not math.isfinite(best) or best <= target:
        return None
    with torch.no_grad():
        out = logit_view(ctx, ctx.forward(model, batch.x).float(), domain)
    lo, hi = float(out.min()), float(out.max())
    if ctx.task.classification and hi - lo < p.bound_span:
        return None  # the outputs have not spread to any bound yet: the lr or the time holds them
    like = ctx.pipeline.like  # loss_takes: whole: the model's other output elements stay
    if ctx.task.classification:
        if callable(ctx.pipeline.loss) or domain != "logits":
            inside = box(lo, hi)
            objective = lambda z: ctx.loss(like(to_domain(ctx, inside(z), domain), out), batch.y)  # noqa: E731
            ranged = best_output(objective, torch.zeros_like(out), p.floor_steps, p.floor_lr)[0]
        else:
            with torch.no_grad():
                ranged = float(ctx.loss(like(corners(ctx, out, batch.y, lo, hi), out), batch.y))
    else:
        y = batch.y.float()
        shaped = y.clamp(lo, hi).reshape(out.shape) if y.numel() == out.numel() else None
        if shaped is None:
            return None
        with torch.no_grad():
            ranged = float(ctx.loss(like(shaped, out), batch.y))
    gap = max(reference - floor, 1e-12)
    if ranged <= target or best - ranged > p.pin_ratio * gap:
        return None
    return ranged, (
        f"; the outputs span [{lo:.3g}, {hi:.3g}] (as logits) and no output inside that range "
        f"gets below {ranged:.3g}: the range, not the time, stops the fit (a bounded head: "
        "softmax/sigmoid before a loss of logits, a clamp, a ReLU)"
    )


def _undecided(
    result: CheckResult,
    losses: list[float],
    target: float,
    p: OverfitBatchParams,
    lr: float | None = None,
) -> None:
    """Not fit within the cap, not diverged, not held back by the output range: the run's
    numbers cannot tell a slow or stuck-on-a-plateau correct net from a broken one."""
    n = max(1, len(losses) // 4)
    early, late = _best(losses[: len(losses) - n]), _best(losses[-n:])
    result.status = Status.WARN
    result.metrics["last_quarter_drop"] = early - late if math.isfinite(early) else float("nan")
    at = f" at the configured lr {lr:.3g}" if lr else ""
    result.message = (
        f"not fit within {len(losses)} steps{at} (budget {p.max_steps}, extended to the cap "
        f"{p.extend_to}): best loss {_best(losses):.3g}, target <= {target:.3g}; the last "
        f"quarter of the run moved the best by {early - late:.3g}. The run did not diverge "
        "and the outputs are not held by their range, so this is a slow fit or a plateau "
        "(sigmoid nets, a small lr), not evidence of a wiring bug: train longer or raise "
        "the lr to confirm"
    ) + (result.message[result.message.find("; at lr") :] if "; at lr" in result.message else "")


def _wiring(ctx: Context, out0: Tensor, y: Tensor, p: OverfitBatchParams, domain: str) -> str:
    """What is wrong with a user's loss on this batch, judged on free outputs shaped like
    the model's ('' when nothing): it has no floor (it keeps falling at an undiminished pace,
    the mark of a loss linear in the output: F.nll_loss on raw logits), or (regression) the
    targets themselves score no better than a constant (the loss does not compare each
    output with its own target: shapes that broadcast, [B, 1] against [B] -> [B, B])."""
    if not callable(ctx.pipeline.loss):
        return ""  # the task's own losses are bounded below by 0 and reach it at the targets
    with torch.no_grad():
        if not ctx.task.classification and y.numel() == out0.numel() and len(y) > 1:
            ideal = ctx.pipeline.like(y.reshape(out0.shape).to(out0), out0)
            own = float(ctx.loss(ideal, y))
            # each output given another's target (the model's other output elements stay)
            shifted = float(ctx.loss(ctx.pipeline.like(ideal.roll(1, 0), out0), y))
            if bool((y != y[:1]).any()) and own >= shifted:
                shapes = (
                    f" The model's output {list(out0.shape)} and the targets {list(y.shape)} "
                    "broadcast inside the loss (a [B, 1] output against [B] targets gives "
                    "[B, B]: every output compared with every target): squeeze or reshape "
                    "the output to the targets' shape."
                    if out0.shape != y.shape
                    else " Check that the loss compares each output with its own target."
                )
                return (
                    "the loss does not reward predicting each example's own target: the "
                    f"targets themselves as the output score {own:.4g}, no better than the "
                    f"same values given to the wrong examples ({shifted:.4g}), so no model can "
                    f"be fit to them.{shapes}"
                )
    if domain != "logits":
        return ""  # probabilities, log-probabilities: a free tensor leaves their domain
    start = ctx.pipeline.like(torch.zeros_like(out0), out0)  # loss_takes: whole: and the rest
    free = lambda o: ctx.loss(ctx.pipeline.like(o, out0), y)  # noqa: E731
    v0 = float(ctx.loss(start, y))
    half = best_output(free, start, p.floor_steps // 2, p.floor_lr)[0]
    full = best_output(free, start, p.floor_steps, p.floor_lr)[0]
    first, second = v0 - half, half - full
    if full < 0 and first > 0 and second >= p.unbounded_pace * first:
        return (
            f"the loss has no floor: on free outputs it falls from {v0:.3g} to {half:.3g} in "
            f"{p.floor_steps // 2} Adam steps and on to {full:.3g} in as many more, without "
            f"slowing (second half {second / first:.0%} of the first), so training drives it "
            "to minus infinity. F.nll_loss expects log-probabilities: apply log_softmax "
            "first, or use cross_entropy on logits (a loss linear in the output has no floor)"
        )
    return ""


def _reference(
    ctx: Context, model: nn.Module, out0: Tensor, y: Tensor, n: int, domain: str
) -> float:
    """The loss a constant predictor with the prior in the bias pays, averaged over ``n``
    shuffled training targets (the batch alone is too few: 4 regression targets may sit
    near their mean); the batch's own targets when the shapes differ (variable lengths).
    Under ``loss_takes: whole`` the constant takes the prediction's place in the untrained
    ``model``'s whole output on those examples (its other elements, a VAE's mu and logvar,
    as the floor has them on the batch)."""
    n = max(1, min(n, 2**22 // max(1, out0[0].numel())))  # at most 4M output entries
    if ctx.pipeline.takes_whole:
        with torch.no_grad():
            own, ys = outputs_at_init(ctx, model, n, offset=_streams.OVERFIT_REFERENCE)
        if ys.shape[1:] == y.shape[1:]:
            like = ctx.pipeline.like(own.new_zeros(own.shape).to(out0.device), own)
            return domain_loss(
                ctx, constant_output(ctx, like, ctx.prior), ys.to(out0.device), domain
            )[0]
    ys = sample_targets(ctx, n, offset=_streams.OVERFIT_REFERENCE)
    if ys.shape[1:] != y.shape[1:]:
        ys = y.cpu()
    ys = ys.to(out0.device)
    like = out0.new_zeros((len(ys), *out0.shape[1:]))  # [n, ...] shaped like the model's output
    return domain_loss(ctx, constant_output(ctx, like, ctx.prior), ys, domain)[0]


def _overlay(ctx: Context, out: Tensor, y: Tensor, best: float) -> plots.Deferred:
    task, title = ctx.task, f"overfit one batch: labels vs predictions (loss {best:.3g})"
    if task.per_position:  # tokens, or tags by their class names
        itos = (ctx.data.itos if task.autoregressive else ctx.data.class_names) or []
        valid = valid_targets(y)  # [B, T]: -100 positions (padding, the last) shown as "·"
        pred = out.argmax(-1)
        return plots.deferred(
            plots.overlay_tokens,
            [_decode(t, v, itos) for t, v in zip(y, valid, strict=True)],
            [_decode(t, v, itos) for t, v in zip(pred, valid, strict=True)],
            title,
        )
    if task.name == "multiclass":
        keep = valid_targets(y)  # rows without a target are left out
        probs = out[keep].softmax(-1).numpy()
        return plots.deferred(plots.overlay_classes, probs, y[keep].long().numpy(), title)
    if task.name == "binary":
        p1 = torch.sigmoid(out.reshape(-1))
        probs = torch.stack([1 - p1, p1], 1).numpy()
        labels = y.reshape(-1).long().numpy()  # [B] or [B, 1] targets: one label each
        return plots.deferred(plots.overlay_classes, probs, labels, title)
    return plots.deferred(
        plots.overlay_values,
        y.reshape(len(y), -1).mean(-1).numpy(),
        out.reshape(len(y), -1).mean(-1).numpy(),
        title,
        "y",
    )


def _decode(ids: Tensor, valid: Tensor, itos: list[str]) -> str:
    """Token ids [T] as text: one symbol each (itos), or the ids when there is no itos."""
    toks = [
        ("·" if not ok else itos[i] if 0 <= i < len(itos) else "?" if itos else f"{i} ")
        for i, ok in zip(ids.tolist(), valid.tolist(), strict=True)
    ]
    return "".join(toks)
