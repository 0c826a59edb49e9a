"""overfit one batch: a few examples reach near-zero loss; labels and predictions overlaid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import Tensor

from trackcheck import plots
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.registry import register
from trackcheck.training import repeat, train_steps


@dataclass
class OverfitBatchParams:
    n_examples: int = 4  # Karpathy: "as little as two"
    max_steps: int = 300
    # "near zero": the best loss must fall below this fraction of the best input-independent
    # loss (H(labels) or Var(y)); 0.05 means 95% of the loss a constant predictor pays is gone
    max_loss_ratio: float = 0.05
    lr: float | None = None  # None: the stage's optimizer as configured (optim.*)


@register("overfit_batch", OverfitBatchParams, fast=True, order=60)
def overfit_batch(ctx: Context, p: OverfitBatchParams) -> CheckResult:
    """A few examples can be fit to near-zero loss (the model, loss and optimizer are wired)."""
    task = ctx.task
    model = ctx.new_model()
    batch = ctx.head("train", p.n_examples)
    x, y = batch
    opt = ctx.optimizer(model)
    if p.lr is not None:
        for g in opt.param_groups:
            g["lr"] = p.lr
    reference = task.prior_loss(ctx.prior)
    target = p.max_loss_ratio * reference
    losses = train_steps(
        ctx, model, repeat(batch), p.max_steps, opt, on_step=lambda _step, loss: loss <= target
    )
    best = min((v for v in losses if math.isfinite(v)), default=float("nan"))
    with torch.no_grad():
        out = ctx.forward(model, x)  # train mode, as in the last step
    figure = _overlay(ctx, out.float().cpu(), y.cpu(), best)
    steps = len(losses)
    metrics = {
        "best_loss": best,
        "final_loss": losses[-1] if losses else float("nan"),
        "target_loss": target,
        "steps": float(steps),
        "loss_ratio": best / reference,
    }
    series = {"loss": list(enumerate(losses))}
    threshold = f"<= {target:.3g} ({p.max_loss_ratio:g} x {reference:.3g})"
    if best <= target:
        status = Status.PASS
        msg = f"{len(y)} examples fit to loss {best:.3g} in {steps} steps (target {threshold})"
    else:
        status = Status.FAIL
        msg = (
            f"{len(y)} examples reached only loss {best:.3g} in {steps} steps, expected "
            f"{threshold}: the model cannot memorise a tiny batch. Usual causes: softmax or "
            "sigmoid applied before a loss that expects logits, a frozen or detached part of "
            "the model, labels misaligned with inputs, or a learning rate far too low/high"
        )
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


def _overlay(ctx: Context, out: Tensor, y: Tensor, best: float) -> Figure:
    task, title = ctx.task, f"overfit one batch: labels vs predictions (loss {best:.3g})"
    if task.name == "lm":
        itos = ctx.data.itos or []
        dec = lambda ids: "".join(itos[i] if i < len(itos) else "?" for i in ids.tolist())  # noqa: E731
        return plots.overlay_tokens([dec(t) for t in y], [dec(t) for t in out.argmax(-1)], title)
    if task.name == "multiclass":
        return plots.overlay_classes(out.softmax(-1).numpy(), y.long().numpy(), title)
    if task.name == "binary":
        p1 = torch.sigmoid(out.reshape(-1))
        return plots.overlay_classes(torch.stack([1 - p1, p1], 1).numpy(), y.long().numpy(), title)
    return plots.overlay_values(
        y.reshape(len(y), -1).mean(-1).numpy(), out.reshape(len(y), -1).mean(-1).numpy(), title, "y"
    )
