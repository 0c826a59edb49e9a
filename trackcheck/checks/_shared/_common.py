"""Helpers shared by several checks (the leading underscore keeps it out of the registry)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from trackcheck.checks._shared import _streams
from trackcheck.context import Context
from trackcheck.core import SkipCheck
from trackcheck.pipeline import Batch, primary


def shuffled_batches(ctx: Context, n: int, offset: int) -> Iterator[Batch]:
    """Batches of one seeded, shuffled pass over the training set, until ``n`` examples
    (each at most once: a smaller training set is used whole, so its prior and the
    sample's agree)."""
    seen = 0
    for b in ctx.batches(ctx.data.train_loader(generator=ctx.generator(offset))):
        yield b
        seen += len(b)
        if seen >= n:
            return
    if seen == 0:
        raise ValueError("the training loader yielded no batch: is the training set empty?")


@torch.no_grad()
def outputs_at_init(
    ctx: Context, model: nn.Module, n: int, offset: int = _streams.INIT_OUTPUTS
) -> tuple[Tensor, Tensor]:
    """Outputs of an untrained model on ``n`` shuffled training examples (one pass, see
    :func:`shuffled_batches`, its stream ``offset``), in training mode (the mode the first
    training step sees), batch by batch. Returns (out [N, ...], y [N, ...]) concatenated,
    N <= n, on the CPU."""
    model.train()
    outs, ys = [], []
    for x, y in shuffled_batches(ctx, n, offset=offset):
        o = ctx.forward(model, x)
        outs.append(ctx.pipeline.like(o.float().cpu(), o))  # loss_takes: whole keeps the rest
        ys.append(y.cpu())
    return ctx.pipeline.rows(ctx.pipeline.cat(outs), slice(None, n)), torch.cat(ys)[:n]


# the outputs at init are kept for the next check up to this many entries (64 MB float32)
INIT_OUTPUTS_CACHED = 2**24


def other_inits(ctx: Context, n: int, inits: int) -> Iterator[tuple[Tensor, Tensor]]:
    """:func:`outputs_at_init` of the next ``inits - 1`` seeds' fresh models (the stage seed
    + 1, + 2, ...), on the same examples: a verdict on an init that must hold over its draws
    (loss_at_init's shared offset, init_bias's wasted share), one model at a time."""
    for k in range(1, inits):
        yield outputs_at_init(ctx, ctx.new_model(seed=ctx.seed + k), n)


def init_outputs(ctx: Context, n: int) -> tuple[Tensor, Tensor]:
    """:func:`outputs_at_init` of a fresh model (the stage seed), computed once per stage:
    loss_at_init and init_bias judge the same forward over the same batches, so the
    second gets the first's outputs (bit-identical: same seed, same init, same batches)."""
    key = ("init_outputs", ctx.seed, n)
    if key in ctx.cache:
        return ctx.cache[key]  # type: ignore[no-any-return]
    found = outputs_at_init(ctx, ctx.new_model(), n)
    if found[0].numel() <= INIT_OUTPUTS_CACHED:
        ctx.cache[key] = found
    return found


def sample_targets(ctx: Context, n: int, offset: int) -> Tensor:
    """The targets of ``n`` shuffled training examples (one pass), [N, ...] on the CPU."""
    return torch.cat([b.y.cpu() for b in shuffled_batches(ctx, n, offset)])[:n]


def fmt_values(t: Tensor, k: int = 6) -> str:
    """A short printable list of tensor values: [0.52] or [-0.1, 0.3, ... (10 values)]."""
    vals = [f"{v:.3g}" for v in t.reshape(-1).tolist()]
    if len(vals) > k:
        return "[" + ", ".join(vals[:k]) + f", ... ({len(vals)} values)]"
    return "[" + ", ".join(vals) + "]"


def require_trainable(model: nn.Module, check: str) -> None:
    """Skip a check that trains when no parameter requires grad: backward would raise
    PyTorch's raw "element 0 of tensors does not require grad". The contract check reports
    the cause; this says where to look instead of repeating a raw error."""
    if not any(q.requires_grad for q in model.parameters()):
        n = sum(1 for _ in model.parameters())
        raise SkipCheck(
            f"{check} cannot train this model: none of its {n} parameter tensors requires grad "
            "(all frozen, or built under torch.no_grad()); the contract check reports it. "
            "Unfreeze the parameters that should learn (requires_grad_(True))"
        )


@torch.no_grad()
def output_layer(ctx: Context, model: nn.Module, x: Any) -> tuple[str, nn.Module] | None:
    """(name, module) of the layer whose output is the prediction: the last nn.Linear or
    convolution called in a forward on inputs ``x`` whose output has as many entries as the
    prediction tensor (GPT-2's lm_head, BERT's classifier, an MLP's head). None when no
    such layer runs (the prediction is computed some other way)."""
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[str, nn.Module, int]] = []

    def hook(m: nn.Module, _args: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            calls.append((names[m], m, out.numel()))

    kinds = (nn.Linear, nn.modules.conv._ConvNd)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        pred = ctx.forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return next(((n, m) for n, m, k in reversed(calls) if k == pred.numel()), None)


def tied_to_embedding(model: nn.Module, layer: nn.Module) -> bool:
    """Whether ``layer``'s weight is an nn.Embedding's weight (a tied LM head)."""
    w = getattr(layer, "weight", None)
    return w is not None and any(
        e.weight is w for e in model.modules() if isinstance(e, nn.Embedding)
    )


# Inputs whose root mean square exceeds this are not standardised. A default-init Linear
# (PyTorch's U(+-1/sqrt(fan_in))) maps features of rms r to outputs of std r / sqrt(3), so
# features beyond sqrt(3) x the unit logit std loss_at_init admits put a one-layer model's
# outputs out of its band by their scale alone; standardised data has rms 1, pixels in
# [0, 1] less, MNIST-normalised pixels 1.
MAX_INPUT_RMS = 3**0.5


def input_scale(ctx: Context, n: int = 1024) -> tuple[float, int, float]:
    """(rms of the content input over ``n`` training examples, the feature with the largest
    rms, that rms): the inputs' scale, for messages that blame it. (nan, -1, nan) when the
    content input is not floating point (token ids have no scale) or cannot be read."""
    try:
        x = primary(ctx.head("train", n).x)
    except Exception:  # noqa: BLE001 - inputs the probe cannot read: no scale
        return float("nan"), -1, float("nan")
    if not x.is_floating_point() or x.numel() == 0:
        return float("nan"), -1, float("nan")
    per = x.detach().double().reshape(len(x), -1).pow(2).mean(0).sqrt()  # [features]
    rms = float(x.detach().double().pow(2).mean().sqrt())
    i = int(per.argmax())
    return rms, i, float(per[i])


def unnormalised(ctx: Context) -> str:
    """A clause naming the inputs' scale when they are not standardised (rms above
    ``MAX_INPUT_RMS``), else ''."""
    rms, i, top = input_scale(ctx)
    if not rms > MAX_INPUT_RMS:
        return ""
    return (
        f"the inputs are not standardised (rms {rms:.3g}, feature {i} rms {top:.3g}; "
        f"standardised data has rms 1): a default-init layer maps features of rms r to "
        "outputs of std about r / sqrt(3), so the outputs at init follow the inputs' "
        "scale; standardise the inputs (subtract the training mean, divide by the std)"
    )
