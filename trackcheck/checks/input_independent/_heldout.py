"""input_independent's data: the blanked inputs, the held-out sets that judge its two
models (the test split and a slice of the training split that neither model trains on; the
check's module docstring says why both), and the training batches without that slice (the
shared training run's, checks/_shared/_run.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.utils.data import DataLoader, IterableDataset, Subset

from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._domain import output_domain, to_domain
from trackcheck.checks._shared._floor import constant_output
from trackcheck.context import Context
from trackcheck.pipeline import primary, replace_primary


def blank(x: Any, token_id: int = 0, noise: Noise | None = None) -> Any:
    """The input with its information removed: zeros for float inputs, one constant token id
    for integer (token) inputs; tuples and lists are blanked leaf by leaf. A dict of keyword
    inputs has its content tensor blanked (``input_ids``, ``pixel_values``: see
    ``pipeline.primary``) and keeps the rest: an all-zero ``attention_mask`` would mask every
    position (NaN in models with boolean masks), and padding stays padding.

    A tuple of inputs likewise: its first tensor (``pipeline.primary``) is blanked, and of
    the others, those that say how to read an example rather than what is in it are kept:
    boolean tensors (masks) and integer tensors of at most one value per example (``[B]``
    or a scalar: sequence lengths for ``pack_padded_sequence``, which zeros would make
    invalid; offsets). Float tensors and integer tensors with a per-position axis
    (``[B, T]`` token ids) carry content and are blanked. With ``noise``, float tensors shaped
    like its statistics become draws of it instead of zeros."""
    if isinstance(x, Tensor):
        if noise is not None and noise.fits(x):
            return noise.draw(x)
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            return torch.zeros_like(x)
        return torch.full_like(x, token_id)
    if isinstance(x, tuple) and x and isinstance(x[0], Tensor):
        content = blank(x[0], token_id, noise)
        return (content, *(v if _reads(v) else blank(v, token_id, noise) for v in x[1:]))
    if isinstance(x, list | tuple):
        return type(x)(blank(v, token_id, noise) for v in x)
    if isinstance(x, dict):
        return replace_primary(x, blank(primary(x), token_id, noise))
    return x


def _reads(v: Any) -> bool:
    """Whether a tensor beside the content says how to read the example (a mask, lengths,
    offsets) rather than what is in it: kept as it is by :func:`blank`."""
    if not isinstance(v, Tensor):
        return False
    if v.dtype == torch.bool:
        return True
    return not (v.is_floating_point() or v.is_complex()) and v.dim() <= 1


# normalisations whose statistics run over the examples or the positions of one input: a
# blank (constant) input has zero variance there, so they divide rounding error by
# sqrt(eps) (x316 at eps 1e-5) layer after layer, and its training diverges (a d2l
# ResNet-18 at its SGD lr 0.05 on zero inputs: loss 4e4 at step 1, NaN at step 4)
NORMALISING = (_BatchNorm, _InstanceNorm)


def normalises_over_inputs(model: nn.Module) -> bool:
    return any(isinstance(m, NORMALISING) for m in model.modules())


@dataclass
class Noise:
    """Gaussian inputs with each input element's mean and standard deviation over training
    examples (mean, std [*input shape]), drawn independently per example from a seeded
    generator: the input's first two moments without its content, so a model that normalises
    over the batch sees a blank it can train on. Independent of the labels by construction:
    a baseline on these inputs can learn the prior only, as on zeros."""

    mean: Tensor
    std: Tensor
    generator: torch.Generator

    @classmethod
    def fit(cls, xs: list[Tensor], generator: torch.Generator) -> Noise | None:
        """From the content tensors of training batches ([B, ...] each); None unless float."""
        if not xs or not xs[0].is_floating_point() or xs[0].dim() < 2:
            return None
        allx = torch.cat([x.detach().float().cpu() for x in xs])  # [N, ...]
        return cls(allx.mean(0), allx.std(0), generator)

    def fits(self, x: Tensor) -> bool:
        return x.is_floating_point() and tuple(x.shape[1:]) == tuple(self.mean.shape)

    def draw(self, like: Tensor) -> Tensor:
        z = torch.randn(like.shape, generator=self.generator)  # on the CPU: one stream
        return (self.mean + self.std * z).to(device=like.device, dtype=like.dtype)


@dataclass
class Plan:
    """Which held-out sets judge the two models (their training batches: ``training_batches``)."""

    judged: dict[str, Callable[[], Iterable[Any]]]  # set name -> a fresh loader over it
    note: str = ""  # what could not be done, said in the message


def plan(ctx: Context, train_holdout: float, max_eval: int) -> Plan:
    """The held-out sets: the test split, and the training slice (or why there is none)."""
    rest, held, note = _split(ctx, train_holdout, max_eval)
    judged: dict[str, Callable[[], Iterable[Any]]] = {"test split": ctx.data.test_loader}
    if held is not None:
        data = ctx.data
        judged["training slice"] = lambda: DataLoader(
            held, batch_size=data.batch_size, shuffle=False, collate_fn=data.collate_fn
        )
    return Plan(judged, note)


def training_batches(
    ctx: Context, train_holdout: float, max_eval: int, offset: int
) -> Iterator[Any]:
    """Endless training batches, on the device, shuffled by the stream ``offset``, from the
    training split minus the slice :func:`plan` holds out (all of it when there is none)."""
    rest, _, _ = _split(ctx, train_holdout, max_eval)
    if rest is None:
        return ctx.train_batches(seed_offset=offset)
    data = ctx.data

    def batches() -> Iterator[Any]:
        g = ctx.generator(offset)
        while True:  # epochs over the rest, shuffled as the training loader would
            loader = DataLoader(
                rest,
                batch_size=data.batch_size,
                shuffle=True,
                generator=g,
                collate_fn=data.collate_fn,
            )
            yield from ctx.batches(loader)

    return batches()


def _split(
    ctx: Context, train_holdout: float, max_eval: int
) -> tuple[Subset[Any] | None, Subset[Any] | None, str]:
    """(the training examples trained on, the training slice held out, a note): carve the
    slice out of the training split (seeded), or say why not (None, None, why)."""
    data = ctx.data
    train = data.train
    if train_holdout <= 0:
        return None, None, ""
    if data.train_loader_fn is not None or isinstance(train, IterableDataset):
        note = (
            "no training slice was held out (a custom train loader or an iterable dataset "
            "cannot be split here), so train labels shuffled against their inputs can pass "
            "this check by luck"
        )
        return None, None, note
    n = len(train)  # type: ignore[arg-type]
    k = min(int(n * train_holdout), max_eval)
    if k < 2 or n - k < 2:
        note = f"no training slice was held out: {n} training examples are too few to split"
        return None, None, note
    order = torch.randperm(n, generator=ctx.generator(_streams.HOLDOUT_SPLIT)).tolist()
    return Subset(train, order[k:]), Subset(train, order[:k]), ""


@torch.no_grad()
def start_losses(
    ctx: Context, model: nn.Module, loader: Iterable[Any], max_eval: int
) -> tuple[Tensor, Tensor]:
    """([N] per-example losses of ``model`` in eval mode, [N] per-example losses of the best
    input-independent prediction) over the first ``max_eval`` examples of ``loader``. The
    latter is the training targets' prior in the bias (the label frequencies, the target
    mean), shaped like ``model``'s outputs: the lowest loss a blanked model can expect there.
    One forward per batch serves both."""
    losses: list[Tensor] = []
    priors: list[Tensor] = []
    for x, y in _first(ctx, model, loader, max_eval):
        raw = ctx.forward(model, x)
        losses.append(ctx.per_example_loss(raw, y).double().cpu())
        out = raw.float()
        const = to_domain(ctx, constant_output(ctx, out, ctx.prior), output_domain(ctx, out, y))
        const = ctx.pipeline.like(const, raw)  # loss_takes: whole: the model's other elements
        priors.append(ctx.per_example_loss(const, y).double().cpu())
    return torch.cat(losses)[:max_eval], torch.cat(priors)[:max_eval]


@torch.no_grad()
def heldout_losses(
    ctx: Context,
    model: nn.Module,
    loader: Iterable[Any],
    max_eval: int,
    token_id: int | None = None,
    noise: Noise | None = None,
) -> Tensor:
    """[N] per-example losses in eval mode over the first ``max_eval`` examples of
    ``loader``; with ``token_id`` set, on blanked inputs (``noise``: see :func:`blank`)."""
    losses: list[Tensor] = []
    for x, y in _first(ctx, model, loader, max_eval):
        if token_id is not None:
            x = blank(x, token_id, noise)
        losses.append(ctx.per_example_loss(ctx.forward(model, x), y).double().cpu())
    return torch.cat(losses)[:max_eval]


def _first(
    ctx: Context, model: nn.Module, loader: Iterable[Any], max_eval: int
) -> Iterator[tuple[Any, Tensor]]:
    """The batches of ``loader`` that hold its first ``max_eval`` examples, with ``model`` in
    eval mode meanwhile (train mode after); a loader with no batch is an error."""
    model.eval()
    seen = 0
    try:
        for x, y in ctx.batches(loader):
            yield x, y
            seen += len(y)
            if seen >= max_eval:
                break
    finally:
        model.train()
    if seen == 0:
        raise ValueError("a held-out loader yielded no batch: is the test split empty?")
