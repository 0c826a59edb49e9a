"""verify decreasing training loss: a short run trends down, a slightly bigger model does better,
and every trainable parameter actually moves."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import stats
from torch import nn

from trackcheck import plots
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.registry import register
from trackcheck.training import train_steps


@dataclass
class LossDecreasesParams:
    steps: int = 60
    # Mann-Kendall trend test on the per-step losses (Kendall's tau against the step):
    # fail unless the downward trend is significant at this one-sided level
    alpha: float = 0.01
    # the bigger model (model.bigger) must reach a lower loss over the last quarter of the
    # run, by a one-sided Wilcoxon test on the paired steps (same batches); else warn
    compare_bigger: bool = True
    bigger_alpha: float = 0.05
    # trainable parameter tensors allowed to stay unchanged (fnmatch patterns on names)
    allow_unchanged: list[str] = field(default_factory=list)


def _trend(losses: list[float]) -> tuple[float, float, float]:
    """(tau, one-sided p-value for a decrease, Theil-Sen slope per step)."""
    steps = np.arange(len(losses))
    tau, p_two = stats.kendalltau(steps, losses)
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


@register("loss_decreases", LossDecreasesParams, fast=True, order=70)
def loss_decreases(ctx: Context, p: LossDecreasesParams) -> CheckResult:
    """Training loss goes down over a short run, and a slightly bigger model goes lower."""
    model = ctx.new_model()
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    losses = train_steps(ctx, model, ctx.train_batches(seed_offset=7), p.steps)
    stale = _unchanged(model, before, p.allow_unchanged)
    series = {"loss": list(enumerate(losses))}
    metrics: dict[str, float] = {"first_loss": losses[0], "last_loss": losses[-1]}
    curves = {"model": losses}

    if not all(math.isfinite(v) for v in losses):
        msg = (
            f"training loss became {losses[-1]} at step {len(losses) - 1}: lower the learning rate"
        )
        return CheckResult(
            "loss_decreases",
            Status.FAIL,
            msg,
            metrics=metrics,
            series=series,
            figures={"loss": plots.curves(curves, "training loss")},
        )

    tau, p_down, slope = _trend(losses)
    q = max(len(losses) // 4, 1)
    drop = 1 - float(np.median(losses[-q:])) / float(np.median(losses[:q]))
    n_stale = sum(before[n].numel() for n in stale)
    n_total = sum(v.numel() for v in before.values())
    metrics.update(
        {
            "kendall_tau": tau,
            "p_value": p_down,
            "theil_sen_slope": slope,
            "relative_drop": drop,
            "unchanged_params": float(len(stale)),
            "unchanged_fraction": n_stale / max(n_total, 1),
        }
    )
    problems, warnings = [], []
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
    if p_down >= p.alpha:
        problems.append(
            f"no significant downward trend in {len(losses)} steps (Kendall tau "
            f"{tau:.2f}, p={p_down:.2g} >= {p.alpha:g}; median loss change "
            f"{-drop:+.1%}): check the learning rate and that the loss is "
            "backpropagated into the model"
        )

    if p.compare_bigger and ctx.bigger_model_factory is not None and not problems:
        big = ctx.new_model(bigger=True)
        big_losses = train_steps(ctx, big, ctx.train_batches(seed_offset=7), p.steps)
        curves["bigger model"] = big_losses
        series["bigger_loss"] = list(enumerate(big_losses))
        a, b = np.array(losses[-q:]), np.array(big_losses[-q:])
        p_big = float(stats.wilcoxon(b, a, alternative="less").pvalue) if q >= 5 else 1.0
        metrics.update({"bigger_last_loss": float(np.median(b)), "bigger_p_value": p_big})
        if p_big >= p.bigger_alpha:
            warnings.append(
                f"the bigger model did not reach a lower loss (median over the last "
                f"{q} steps {np.median(b):.4g} vs {np.median(a):.4g}, p={p_big:.2g}): "
                "capacity is not what limits the loss; look at the data or the lr"
            )
    elif p.compare_bigger and ctx.bigger_model_factory is None:
        warnings.append("no bigger model configured (model.bigger), so capacity was not compared")

    fig = plots.curves(curves, "training loss (same batches)")
    threshold = f"p < {p.alpha:g}, all params move"
    if problems:
        status, msg = Status.FAIL, "; ".join(problems)
    else:
        status = Status.WARN if warnings and ctx.bigger_model_factory is not None else Status.PASS
        msg = (
            f"loss {losses[0]:.4g} -> {losses[-1]:.4g} over {len(losses)} steps (Kendall "
            f"tau {tau:.2f}, p={p_down:.2g}; median drop {drop:.1%})"
        )
        if warnings:
            msg += "; " + "; ".join(warnings)
        elif "bigger_last_loss" in metrics:
            msg += f"; bigger model lower ({metrics['bigger_last_loss']:.4g})"
    return CheckResult(
        "loss_decreases",
        status,
        msg,
        metrics=metrics,
        series=series,
        figures={"loss": fig},
        value=p_down,
        threshold=threshold,
    )
