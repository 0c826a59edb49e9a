"""init well: the mean prediction at init matches the class prior or the target mean.

The fix it advises is the output layer's bias; that layer is found by a forward hook (the
last Linear/conv whose output is the prediction). When it has no bias, as in GPT-2 whose
lm_head is tied to the token embedding, there is nothing to set: the status is capped at
warn and the advice says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackcheck.checks._shared._common import (
    fmt_values,
    init_outputs,
    output_layer,
    tied_to_embedding,
)
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.registry import register


@dataclass
class InitBiasParams:
    n_examples: int = 1024
    # The measure is the "hockey stick": the share of the initial loss that the first steps
    # spend only on learning the bias, (loss of the mean prediction - best constant loss) /
    # best constant loss, i.e. KL(prior || mean prediction) / H(prior), or
    # (mean(y) - mean(y_hat))^2 / Var(y) for regression.
    warn_share: float = 0.05
    # fail when the bias costs more than half the initial loss: e.g. bias 0 on a 1:10
    # imbalanced binary task (share 1.27) or on regression targets with mean 3 std from 0
    fail_share: float = 0.5
    # an output layer without a bias (GPT-2's tied lm_head) caps the status at warn: the
    # advice to set the bias cannot be followed there


@register("init_bias", InitBiasParams, fast=True)
def init_bias(ctx: Context, p: InitBiasParams) -> CheckResult:
    """The final-layer bias carries the prior (mean prediction at init vs class prior / mean)."""
    task = ctx.task
    out, _ = init_outputs(ctx, p.n_examples)  # shared with loss_at_init: one forward
    mean_pred = task.mean_prediction(out)
    best = task.prior_loss(ctx.prior)
    excess = task.constant_loss(ctx.prior, mean_pred) - best
    share = excess / best if best > 0 else 0.0
    fix = fmt_values(task.prior_bias(ctx.prior))
    if task.classification:
        assert ctx.prior.probs is not None
        prior = fmt_values(ctx.prior.probs)
        observed = f"mean predicted probabilities {fmt_values(mean_pred)} vs prior {prior}"
    else:
        observed = f"mean prediction {float(mean_pred[0]):.4g} vs target mean {ctx.prior.mean:.4g}"
    metrics = {"excess_loss": excess, "hockey_stick_share": share, "best_constant_loss": best}
    if task.classification:
        assert ctx.prior.probs is not None
        metrics.update({f"mean_pred_{i}": float(v) for i, v in enumerate(mean_pred[:20])})
    else:
        metrics.update({"mean_pred": float(mean_pred[0]), "target_mean": ctx.prior.mean})
    threshold = f"< {p.warn_share:g} (fail >= {p.fail_share:g})"
    if share >= p.fail_share or share != share:
        status = Status.FAIL
    elif share >= p.warn_share:
        status = Status.WARN
    else:
        status = Status.PASS
    msg = (
        f"{observed}: the bias costs {share:.1%} of the initial loss ({excess:.4g} over {best:.4g})"
    )
    if status != Status.PASS:
        model = ctx.new_model()  # the same init the outputs came from
        found = output_layer(ctx, model, ctx.head("train", 2).x)
        no_bias = found is not None and getattr(found[1], "bias", None) is None
        metrics["output_layer_has_bias"] = 0.0 if no_bias else 1.0
        if no_bias and found is not None:
            status = Status.WARN  # the advice cannot be followed: not a failure of the init
            msg += _no_bias_advice(found[0], tied_to_embedding(model, found[1]), fix)
        else:
            where = f" ({found[0]}.bias)" if found is not None else ""
            msg += (
                f", a hockey-stick start; set the final layer's bias to {fix}{where} "
                "(shipped models: model.out_bias=auto)"
            )
    return CheckResult("init_bias", status, msg, metrics=metrics, value=share, threshold=threshold)


def _no_bias_advice(name: str, tied: bool, fix: str) -> str:
    how = " (its weight is tied to the token embedding)" if tied else ""
    return (
        f", a hockey-stick start. The output layer {name} has no bias{how}, so the prior "
        "cannot be carried there: the first steps spend the loss learning it, as expected "
        f"for a tied-head language model. Add a bias to {name} initialised to {fix}, or "
        "accept the hockey stick (capped at warn)"
    )
