"""overfit one batch: a few examples reach their loss's floor; labels and predictions overlaid.

"Near zero" is measured from the floor of the loss in use (the best any output reaches on
the batch), so a loss with a floor above zero (label smoothing) can be fit too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._common import require_trainable, sample_targets
from trackcheck.checks._shared._floor import best_output, constant_output, mean_loss
from trackcheck.checks.gradient_flow import with_finding_note
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import valid_targets
from trackcheck.registry import register
from trackcheck.training import repeat, train_steps


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
    # tuning matter that warns, not a bug that fails. Costs a second fit on failure only.
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


@register("overfit_batch", OverfitBatchParams, fast=True)
def overfit_batch(ctx: Context, p: OverfitBatchParams) -> CheckResult:
    """A few examples can be fit to near-zero loss (the model, loss and optimizer are wired)."""
    model = ctx.new_model()
    require_trainable(model, "overfit_batch")
    batch = ctx.head("train", p.n_examples)
    x, y = batch
    with torch.no_grad():
        out0 = ctx.forward(model, x).float()  # the output's shape on this batch
    floor = _floor(ctx, out0, y, p)
    reference = _reference(ctx, out0, y, p.reference_examples)
    target = floor + p.max_loss_ratio * max(reference - floor, 0.0)
    losses, lr, out = _fit(ctx, model, batch, p.lr, target, p.max_steps)
    best = _best(losses)
    figure = _overlay(ctx, out.float().cpu(), y.cpu(), best)
    result = _judge(p, len(y), losses, best, floor, reference, target, figure)
    if result.status == Status.FAIL and p.retry_lr_factor > 0 and lr:
        del model, out  # one model at a time
        lr2 = lr * p.retry_lr_factor if _descending(losses) else lr / p.retry_lr_factor
        retry = _fit(ctx, ctx.new_model(), batch, lr2, target, p.max_steps)
        _judge_retry(result, losses, lr, retry, target)
    return with_finding_note(ctx, result)  # a FAIL points to gradient_flow's finding


def _fit(
    ctx: Context, model: torch.nn.Module, batch: Any, lr: float | None, target: float, steps: int
) -> tuple[list[float], float | None, Tensor]:
    """Train ``model`` on ``batch`` until its loss reaches ``target`` (at most ``steps``):
    the losses, the lr used (None when the optimizer has none) and the final output."""
    opt = ctx.optimizer(model)
    for g in opt.param_groups:
        if lr is not None:
            g["lr"] = lr
    used = opt.param_groups[0].get("lr")
    losses = train_steps(
        ctx, model, repeat(batch), steps, opt, on_step=lambda _step, loss: loss <= target
    )
    with torch.no_grad():
        out = ctx.forward(model, batch.x)  # train mode, as in the last step
    return losses, float(used) if isinstance(used, int | float) else None, out


def _best(losses: list[float]) -> float:
    return min((v for v in losses if math.isfinite(v)), default=float("nan"))


def _descending(losses: list[float]) -> bool:
    """Still at its best at the end (within 1% of it): the loss was descending, not spiking."""
    best, last = _best(losses), losses[-1] if losses else float("nan")
    return math.isfinite(last) and last <= best + 0.01 * abs(best) + 1e-12


def _judge_retry(
    result: CheckResult,
    losses: list[float],
    lr: float,
    retry: tuple[list[float], float | None, Tensor],
    target: float,
) -> None:
    """Fold the other lr's fit into ``result``: it fits -> the lr is wrong, not the wiring."""
    losses2, lr2, _ = retry
    best2 = _best(losses2)
    result.metrics.update(retry_lr=lr2 or float("nan"), retry_best_loss=best2)
    result.series["loss_retry"] = list(enumerate(losses2))
    if not best2 <= target:
        result.message += f"; at lr {lr2:.3g} too it reached only {best2:.3g}"
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
    }
    series = {"loss": list(enumerate(losses))}
    threshold = (
        f"<= {target:.3g} (floor {floor:.3g} + {p.max_loss_ratio:g} x ({reference:.3g} - floor))"
    )
    status, msg = _verdict(n, best, target, steps, threshold, floor, reference)
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


def _floor(ctx: Context, out0: Tensor, y: Tensor, p: OverfitBatchParams) -> float:
    """The lowest loss any output reaches on targets ``y``: a free tensor shaped like the
    model's output ``out0`` optimised against ``ctx.loss`` (the loss training uses)."""
    start = torch.zeros_like(out0)
    if not ctx.task.classification and y.numel() == out0.numel():
        start = y.reshape(out0.shape).to(out0)  # regression: the targets are the optimum
    if not callable(ctx.pipeline.loss) and math.isfinite(float(ctx.loss(start, y))):
        # the task's own losses (cross-entropy, BCE, MSE) are >= 0 and reach 0 (in the limit
        # of large logits, or at the targets): the floor is known, no need to search for it
        return 0.0
    return best_output(lambda o: ctx.loss(o, y), start, p.floor_steps, p.floor_lr)[0]


def _reference(ctx: Context, out0: Tensor, y: Tensor, n: int) -> float:
    """The loss a constant predictor with the prior in the bias pays, averaged over ``n``
    shuffled training targets (the batch alone is too few: 4 regression targets may sit
    near their mean); the batch's own targets when the shapes differ (variable lengths)."""
    n = max(1, min(n, 2**22 // max(1, out0[0].numel())))  # at most 4M output entries
    ys = sample_targets(ctx, n, offset=_streams.OVERFIT_REFERENCE)
    if ys.shape[1:] != y.shape[1:]:
        ys = y.cpu()
    ys = ys.to(out0.device)
    like = out0.new_zeros((len(ys), *out0.shape[1:]))  # [n, ...] shaped like the model's output
    return mean_loss(ctx, constant_output(ctx, like, ctx.prior), ys)[0]


def _overlay(ctx: Context, out: Tensor, y: Tensor, best: float) -> plots.Deferred:
    task, title = ctx.task, f"overfit one batch: labels vs predictions (loss {best:.3g})"
    if task.name == "lm":
        itos = ctx.data.itos or []
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
        return plots.deferred(plots.overlay_classes, probs, y.long().numpy(), title)
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
