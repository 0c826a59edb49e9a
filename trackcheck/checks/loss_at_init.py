"""verify loss @ init: the untrained loss sits in a two-sided band around its derived value."""

from __future__ import annotations

import math
from dataclasses import dataclass

from trackcheck.checks._common import outputs_at_init
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.registry import register


@dataclass
class LossAtInitParams:
    # training examples the loss is averaged over; its standard error shrinks as 1/sqrt(n)
    n_examples: int = 1024
    # Relative half-width of the band around the derived values. For softmax CE the excess
    # over ln(C) is about Var(logits)/2, so 0.1 lets the logits spread with std ~0.7 at init
    # (C = 10) and no more. Measured: the shipped models sit within 3% of the derived value;
    # a final layer scaled x10 lands 20% (MLP) to 240% (ResNet) above it.
    rel_tol: float = 0.1
    # the band is never narrower than z standard errors of the measured mean
    z: float = 3.0


@register("loss_at_init", LossAtInitParams, fast=True, order=10)
def loss_at_init(ctx: Context, p: LossAtInitParams) -> CheckResult:
    """The loss at init matches the derived value (ln C, label entropy, Var(y), H(p))."""
    task = ctx.task
    model = ctx.new_model()
    out, y = outputs_at_init(ctx, model, p.n_examples)
    per_ex = ctx.per_example_loss(out, y).double()  # [N]
    measured = float(per_ex.mean())
    se = float(per_ex.std() / math.sqrt(len(per_ex))) if len(per_ex) > 1 else 0.0
    # Two derived values: an all-zero output (ln C, E[y^2], ln 2) and a bias that carries
    # the prior (H(labels), Var(y), H(p)). A correct init sits at either or between them.
    uniform = task.constant_loss(ctx.prior, task.zero_output_prediction(task.mean_prediction(out)))
    prior_loss = task.prior_loss(ctx.prior)
    lo_ref, hi_ref = min(uniform, prior_loss), max(uniform, prior_loss)
    lo = lo_ref - max(p.rel_tol * lo_ref, p.z * se)
    hi = hi_ref + max(p.rel_tol * hi_ref, p.z * se)
    expected = uniform if abs(measured - uniform) <= abs(measured - prior_loss) else prior_loss
    metrics = {
        "loss": measured,
        "loss_se": se,
        "expected": expected,
        "expected_uniform": uniform,
        "expected_prior": prior_loss,
        "band_lo": lo,
        "band_hi": hi,
        "n_examples": float(len(per_ex)),
    }
    band = f"[{lo:.4g}, {hi:.4g}]"
    ref = (
        f"expected {uniform:.4g} for a uniform/zero output or {prior_loss:.4g} with the "
        f"prior in the bias; band {band} (+-{p.rel_tol:.0%} or {p.z:g} SE)"
    )
    if not math.isfinite(measured):
        status, msg = Status.FAIL, f"loss at init is {measured}: the forward pass produces NaN/Inf"
    elif measured > hi:
        status = Status.FAIL
        msg = (
            f"loss at init {measured:.4g} +- {se:.2g} is above the band, {ref}: the outputs "
            "are too large at init; scale the final layer's weights down (e.g. x0.1 or "
            "zero-init) and check the final bias"
        )
    elif measured < lo:
        status = Status.FAIL
        msg = (
            f"loss at init {measured:.4g} +- {se:.2g} is below the band, {ref}: an untrained "
            "model cannot beat the constant predictor; is the loss reduced over the wrong "
            "axis or summed wrongly, or do the labels leak into the inputs?"
        )
    else:
        status, msg = Status.PASS, f"loss at init {measured:.4g} +- {se:.2g}, {ref}"
    return CheckResult("loss_at_init", status, msg, metrics=metrics, value=measured, threshold=band)
