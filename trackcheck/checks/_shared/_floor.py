"""Expected losses derived through the loss training actually uses (the task's or the user's).

A closed form (ln C, H(prior), Var(y)) holds for the task's own loss only; label smoothing,
class weights, a focal or Huber loss, ``ignore_index`` each move it. So the checks build
the outputs whose loss they need (an all-zero output, the prior in the bias, the prior plus
Gaussian logit noise, the best output a free tensor can reach) shaped like the model's and
pass them through ``ctx.per_example_loss`` / ``ctx.loss``: the expected value is then exact
for whatever loss is configured. They are built as logits and mapped into the domain the loss
reads (probabilities, log-probabilities: :mod:`trackcheck.checks._shared._domain`) by the ``domain``
argument, so a log_softmax + nll_loss model is compared with uniform log-probabilities, not
with a zero it could never output.

Under ``pipeline.loss_takes: whole`` each built output takes the place of the prediction in
the model's whole output on the same examples (``ctx.pipeline.like``): the other elements
(a VAE's mu, logvar) stay the model's own, so the loss's other terms are evaluated as they
are at init.

Shapes: ``out`` is the model's prediction, [B, C] / [B, T, V] logits, [B] or [B, 1] for
binary and regression; ``y`` the aligned target, [B] / [B, T].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from trackcheck.checks._shared._domain import to_domain
from trackcheck.context import Context
from trackcheck.tasks import Prior


def constant_output(ctx: Context, like: Tensor, prior: Prior | None = None) -> Tensor:
    """An input-independent output shaped like ``like``, in logits: all zeros (uniform
    probabilities, logit 0, prediction 0), or the bias that carries ``prior`` broadcast over
    the last dim. :func:`domain_loss` passes it to the loss in the loss's domain."""
    zero = torch.zeros_like(like, dtype=torch.float32)
    if prior is not None:
        zero = zero + ctx.task.prior_bias(prior).to(zero)  # [C] / [1] broadcast over the rows
    return ctx.pipeline.like(zero, like)  # loss_takes: whole: the model's other elements


def mean_loss(ctx: Context, out: Tensor, y: Tensor) -> tuple[float, float]:
    """(mean, standard error) of the per-example loss of outputs ``out`` on targets ``y``."""
    with torch.no_grad():
        v = ctx.per_example_loss(out, y).double()  # [B]
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), se


def domain_loss(ctx: Context, z: Tensor, y: Tensor, domain: str) -> tuple[float, float]:
    """:func:`mean_loss` of logits ``z`` mapped into the loss's ``domain``."""
    return mean_loss(ctx, ctx.pipeline.like(to_domain(ctx, z, domain), z), y)


def noisy_loss(
    ctx: Context,
    ref: Tensor,
    y: Tensor,
    std: float,
    draws: int,
    g: torch.Generator,
    domain: str = "logits",
) -> tuple[float, float]:
    """Monte Carlo (mean, SE) of the loss of ``ref + std * N(0, 1)``: the loss of a model whose
    outputs are the constant ``ref`` plus input-dependent noise of that size, the picture of
    an untrained network (its head sums many small random terms: near-Gaussian logits)."""
    vals = []
    with torch.no_grad():
        for _ in range(draws):
            noise = torch.randn(ref.shape, generator=g).to(ref)
            o = ctx.pipeline.like(to_domain(ctx, ref + std * noise, domain), ref)
            vals.append(ctx.per_example_loss(o, y).double())  # [B]
    v = torch.cat(vals)
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), se


def shuffled_loss(
    ctx: Context, out: Tensor, y: Tensor, k: int, g: torch.Generator
) -> tuple[float, float]:
    """(mean, SE) of the loss with the targets shuffled across examples, ``k`` times: the
    model's own outputs made independent of the targets, as the noise model assumes. It
    removes the chance (anti-)alignment of random features with the labels, a first-order
    term of either sign that does not average out over examples (measured -0.09 to +0.11
    on default-init ResNets on digits) and says nothing about the outputs' scale."""
    vals = []
    with torch.no_grad():
        for _ in range(k):
            perm = torch.randperm(len(y), generator=g).to(y.device)
            vals.append(ctx.per_example_loss(out, y[perm]).double())  # [B]
    v = torch.stack(vals).mean(0)  # [B]: the k shuffles share the examples, so average them
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()), se


def label_noise(ctx: Context, y: Tensor, like: Tensor, g: torch.Generator) -> Tensor:
    """Unit noise shaped like ``like`` that is a function of the target alone, the most a
    random init can align with the labels: one Gaussian vector per target value (class,
    token, 0/1), shared by every example (position) with that target; for regression a
    random multiple of the standardised target."""
    extra = like.shape[y.dim() :]  # [C] / [V] / [] / [1]: what each target position gets
    if not ctx.task.classification:
        z = (y.double() - y.double().mean()) / y.double().std().clamp_min(1e-12)
        z = z.reshape(*y.shape, *([1] * len(extra))) * torch.randn((), generator=g, dtype=z.dtype)
        return z.expand(like.shape).to(like)
    ids = y.long()
    k = int(ids.max().clamp_min(0)) + 1
    ids = torch.where(ids >= 0, ids, k)  # ignored positions draw their own vector
    table = torch.randn((k + 1, *extra), generator=g).to(like)
    return table[ids.to(table.device)]  # [B, ...] == like.shape


def aligned_spread(
    ctx: Context,
    ref: Tensor,
    y: Tensor,
    std: float,
    draws: int,
    g: torch.Generator,
    domain: str = "logits",
) -> float:
    """Standard deviation, over draws, of the mean loss of ``ref + std * label_noise``: how
    far one init's chance alignment with the labels can move the loss, either way."""
    vals = []
    with torch.no_grad():
        for _ in range(draws):
            o = to_domain(ctx, ref + std * label_noise(ctx, y, ref, g), domain)
            o = ctx.pipeline.like(o, ref)
            vals.append(float(ctx.per_example_loss(o, y).double().mean()))
    return float(torch.tensor(vals, dtype=torch.float64).std()) if draws > 1 else 0.0


def output_std(ctx: Context, out: Tensor) -> float:
    """The spread of the outputs at init (``out`` read as logits: ``_domain.logit_view``):
    for logits over classes (multiclass, lm) their std
    over the classes of each example (position), averaged; for one output per example
    (binary, regression) the std over examples. The noise in :func:`noisy_loss` has this
    std by construction, so the two are on one scale."""
    o = out.detach().double()
    if ctx.task.name in ("multiclass", "lm", "token") and o.shape[-1] > 1:
        return float(o.reshape(-1, o.shape[-1]).std(-1).mean())
    flat = o.reshape(len(o), -1)  # [B, k]
    return float(flat.std(0).mean()) if len(o) > 1 else 0.0


def best_output(
    objective: Callable[[Tensor], Tensor], start: Tensor, steps: int, lr: float
) -> tuple[float, Tensor]:
    """Minimise ``objective(o)`` (a scalar) over a free tensor ``o`` starting at ``start``,
    by Adam: the best loss any model could reach on these targets, without a model. Returns
    (lowest value seen, the tensor that gave it). Adam moves each entry by about ``lr`` per
    step whatever the loss's scale, so ``steps * lr`` bounds how far an entry travels:
    logits need about 30 (loss e^-30) for a loss whose floor is 0. beta2 = 0.9: the
    gradient of a loss with floor 0 shrinks with the loss, and a long second-moment memory
    (0.999) shrinks the step with it (300 steps at lr 0.1 then stall at cross-entropy 3e-3;
    with 0.9 they reach 0, and the smoothed floor 0.50029 exactly)."""
    o = start.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([o], lr=lr, betas=(0.9, 0.9))
    best, arg = math.inf, o.detach().clone()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        v = objective(o)
        value = float(v.detach())
        if not math.isfinite(value):
            break
        if value < best:
            best, arg = value, o.detach().clone()
        v.backward()
        opt.step()
    with torch.no_grad():
        value = float(objective(o))
    if math.isfinite(value) and value < best:
        best, arg = value, o.detach().clone()
    return best, arg


def box(lo: float, hi: float) -> Callable[[Tensor], Tensor]:
    """A map from free z onto outputs inside [lo, hi] (either side may be infinite)."""
    if math.isfinite(lo) and math.isfinite(hi):
        return lambda z: lo + (hi - lo) * torch.sigmoid(z)
    if math.isfinite(lo):
        return lambda z: lo + torch.nn.functional.softplus(z)
    return lambda z: hi - torch.nn.functional.softplus(z)


def corners(ctx: Context, like: Tensor, y: Tensor, lo: float, hi: float) -> Tensor:
    """The best outputs inside [lo, hi] for the task's own loss, in closed form: the
    target's logit at hi and every other at lo (cross-entropy falls with the target's logit
    and rises with each other one); binary: hi for a 1, lo for a 0. Shaped like ``like``."""
    if ctx.task.name == "binary":
        return torch.where(y.reshape(like.shape) > 0.5, hi, lo).to(like)
    ids = y.long().clamp_min(0)  # ignored positions (-100) get any valid id: they carry no loss
    onehot = torch.nn.functional.one_hot(ids, like.shape[-1]).to(like)
    return lo + (hi - lo) * onehot
