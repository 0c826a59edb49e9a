"""The domain of the model's outputs, as the loss in use reads them: logits, probabilities or
log-probabilities.

The checks that synthesise outputs (an all-zero "uniform" output, the prior in the bias,
Gaussian noise around them, the best output a free tensor reaches) build them as logits,
the space where "uniform", "prior" and "noise of std s" mean the same for every model, and
pass them through :func:`to_domain` before the loss. A model ending in ``log_softmax``
trained with ``F.nll_loss`` (PyTorch's MNIST example) then sees log-probabilities, a
sigmoid head under ``nn.BCELoss`` probabilities, as its loss expects; the model's own
outputs are read back as logits with :func:`logit_view` (ranges, spreads, overlays).

The domain comes from ``pipeline.output_domain`` when the user says it; else it is
detected once per stage (:func:`output_domain`):

* the task's own loss (cross-entropy, BCE with logits) and ``loss: model`` read logits;
  regression outputs are values (no map), except that a user's regression loss that
  refuses values outside [0, 1] on outputs inside it (``F.binary_cross_entropy`` on a
  sigmoid decoder's pixels, as pytorch/examples' VAE trains) reads probabilities: the
  outputs it is given are synthesised as logits mapped through a sigmoid, while the
  model's own outputs are still read as the values they are (``logit_view`` leaves
  regression alone: edges, overlays and tolerances are in target units);
* a user's loss reads logits when it behaves as a loss of logits: for multiclass / lm it
  is unchanged when a constant is added to every logit of a row (softmax is
  shift-invariant; ``nll_loss``, MSE and BCE on probabilities are not); for binary a
  confident correct logit (+-10, +-20) costs nearly nothing and no less at +-20 than at
  +-10 (``BCEWithLogitsLoss`` does; MSE on it is huge, ``BCELoss`` refuses it);
* a loss that does not read logits reads what the model returns: outputs whose rows
  exp-sum to 1 are log-probabilities, outputs in [0, 1] probabilities. Outputs that are
  neither stay logits: a loss of log-probabilities fed raw logits (``nll_loss`` on a
  Linear's output) is the bug the checks must see, and they see it in logit terms (a floor
  unbounded below).

A loss that reads logits is never switched by the outputs: softmax applied before
cross-entropy stays the bug it is.

Shapes: outputs and logits are alike, [B, C] / [B, T, V] for multiclass and lm, [B] or
[B, 1] for binary and regression.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from trackcheck.context import Context
from trackcheck.losses import scalar_loss
from trackcheck.tasks import Prior

DOMAINS = ("logits", "probs", "log_probs")
# rows of probabilities (or of exp(log-probabilities)) sum to 1 within this (float32 softmax
# over 10^4 classes sums to 1 within 1e-5; 1e-3 leaves room for fp16/bf16 heads)
ROW_SUM_TOL = 1e-3
# shift-invariance of a multiclass loss: |loss(z + c) - loss(z)| within this x (1 + |loss|)
# (float32 cross-entropy of std-2 logits moves ~1e-7 under a shift of 3; nll_loss moves by
# the shift itself, MSE on one-hot targets by ~c^2)
SHIFT_TOL = 1e-4
# binary: a correct logit of this size costs e^-10 under BCE with logits
CONFIDENT_LOGIT = 10.0
# log(p) and logit(p) of probabilities are read with p clamped to [EPS, 1 - EPS]: float32
# sigmoid saturates to 1.0 near 16.6, so the logit view spans about +-16
EPS = 1e-7


def output_domain(ctx: Context, out: Tensor, y: Tensor) -> str:
    """The domain the loss reads the model's outputs ``out`` in, for targets ``y``: the
    user's ``pipeline.output_domain``, or detected once per stage (module docstring)."""
    said = getattr(ctx.pipeline, "output_domain", None)
    if said:
        return str(said)
    key = ("output_domain",)
    if key not in ctx.cache:
        ctx.cache[key] = _detect(ctx, ctx.pipeline.like(out.detach().float(), out), y)
    return str(ctx.cache[key])


def _detect(ctx: Context, out: Tensor, y: Tensor) -> str:
    fn = ctx.pipeline.loss
    if not callable(fn):
        return "logits"  # the task's losses and a model's own loss take logits
    if not ctx.task.classification:
        return "probs" if _reads_unit_values(ctx, out, y) else "logits"
    try:
        if _reads_logits(ctx, out, y):
            return "logits"
    except Exception:  # noqa: BLE001 - a loss that refuses logits (BCELoss: "between 0 and 1")
        pass
    return _shape_of(ctx, out)


def _reads_logits(ctx: Context, out: Tensor, y: Tensor) -> bool:
    fn = ctx.pipeline.user_loss()
    like = ctx.pipeline.like  # the probes take the prediction's place in a whole output
    g = torch.Generator().manual_seed(ctx.seed + 7331)
    with torch.no_grad():
        if ctx.task.name == "binary":
            sign = (y.reshape(-1).float() * 2 - 1).reshape(y.shape).to(out.device)
            z = CONFIDENT_LOGIT * sign.reshape(out.shape) if sign.numel() == out.numel() else None
            if z is None:
                return True  # shapes the probe cannot build: leave the loss as it is
            at0 = float(scalar_loss(fn, like(torch.zeros_like(out), out), y))
            at1, at2 = (float(scalar_loss(fn, like(k * z, out), y)) for k in (1.0, 2.0))
            if not all(math.isfinite(v) for v in (at0, at1, at2)):
                return False
            return at1 < 0.1 * at0 and abs(at2 - at1) <= 0.1 * (at0 - at1)
        z = 2.0 * torch.randn(out.shape, generator=g).to(out)
        c = 3.0 * torch.randn((*out.shape[:-1], 1), generator=g).to(out)  # one shift per row
        a = float(scalar_loss(fn, like(z, out), y))
        b = float(scalar_loss(fn, like(z + c, out), y))
    return math.isfinite(a) and abs(a - b) <= SHIFT_TOL * (1 + abs(a))


def _reads_unit_values(ctx: Context, out: Tensor, y: Tensor) -> bool:
    """A regression loss of probabilities: the outputs lie in [0, 1] and the loss refuses
    (raises, or turns non-finite on) the same outputs moved outside it."""
    if out.numel() == 0 or not (bool((out >= 0).all()) and bool((out <= 1).all())):
        return False
    fn = ctx.pipeline.user_loss()
    try:
        with torch.no_grad():
            moved = ctx.pipeline.like(out + 1.5, out)
            return not math.isfinite(float(scalar_loss(fn, moved, y)))
    except Exception:  # noqa: BLE001 - BCELoss: "all elements of input should be between 0 and 1"
        return True


def _shape_of(ctx: Context, out: Tensor) -> str:
    """What the outputs look like: log-probabilities, probabilities, or neither (logits)."""
    if out.numel() == 0:
        return "logits"
    if ctx.task.name == "binary" or out.shape[-1] == 1:
        if bool((out >= 0).all()) and bool((out <= 1).all()):
            return "probs"
        if bool((out <= 0).all()):
            return "log_probs"
        return "logits"
    rows = out.reshape(-1, out.shape[-1]).double()
    if bool((rows <= ROW_SUM_TOL).all()) and _sum_to_one(rows.exp()):
        return "log_probs"
    if bool((rows >= 0).all()) and _sum_to_one(rows):
        return "probs"
    return "logits"


def _sum_to_one(rows: Tensor) -> bool:
    return bool(((rows.sum(-1) - 1).abs() <= ROW_SUM_TOL).all())


def to_domain(ctx: Context, z: Tensor, domain: str) -> Tensor:
    """Logits ``z`` as the loss reads outputs: softmax / sigmoid probabilities, their logs,
    or ``z`` itself (logits, and regression values unless the loss reads probabilities:
    then each value is a sigmoid of its logit)."""
    if not ctx.task.classification:
        return torch.sigmoid(z) if domain == "probs" else z
    if domain == "logits":
        return z
    binary = ctx.task.name == "binary"
    if domain == "probs":
        return torch.sigmoid(z) if binary else z.softmax(-1)
    if domain == "log_probs":
        return F.logsigmoid(z) if binary else z.log_softmax(-1)
    raise ValueError(f"unknown output domain {domain!r}: use one of {', '.join(DOMAINS)}")


def prior_logits(ctx: Context, prior: Prior, domain: str) -> Tensor:
    """The constant, in logits, that :func:`to_domain` maps onto ``prior``'s prediction:
    the task's prior bias ([C] / [1]); for regression in probabilities the logit of the
    target mean."""
    if not ctx.task.classification and domain == "probs":
        m = min(max(prior.mean, EPS), 1 - EPS)
        return torch.tensor([math.log(m / (1 - m))])
    return ctx.task.prior_bias(prior)


def logit_view(ctx: Context, out: Tensor, domain: str) -> Tensor:
    """The model's outputs ``out`` read back as logits (the inverse of :func:`to_domain`,
    up to a shift per row): log p for probabilities, logit(p) for a binary probability."""
    if domain == "logits" or not ctx.task.classification:
        return out
    o = out.float()
    if ctx.task.name == "binary":
        p = o.clamp(EPS, 1 - EPS) if domain == "probs" else o.exp().clamp(EPS, 1 - EPS)
        z = torch.log(p) - torch.log1p(-p)
    elif domain == "probs":
        z = o.clamp_min(EPS).log()
    else:
        z = o.clamp_min(math.log(EPS))  # log-probabilities are logits already
    return ctx.pipeline.like(z, out)  # loss_takes: whole: the rest of the output follows


def domain_note(domain: str) -> str:
    """A short phrase for messages: how the outputs were read."""
    return {
        "probs": " (outputs read as probabilities)",
        "log_probs": " (outputs read as log-probabilities)",
    }.get(domain, "")
