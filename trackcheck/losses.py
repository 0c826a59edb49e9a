"""The user's loss, measured per example: the checks that compare examples (held-out gains,
prediction dynamics, loss at init) need ``[B]`` losses, and a user's loss returns a scalar.

``torch.func.vmap`` calls the loss on each example as a batch of one (``out[i:i+1]``,
``y[i:i+1]``), all at once; a loss vmap cannot batch (a ``.item()`` inside, data-dependent
control flow) is called example by example instead.

Under ``pipeline.loss_takes: whole`` the output is a tuple of batched tensors (the prediction
and the whole output's other batched elements, a VAE's mu and logvar): each is split into
examples alike.

A loss that cannot take a batch of one (``BCELoss()(out.squeeze(), y)``, as
pytorch/examples' siamese network writes it: a [1, 1] output squeezes to a 0-d tensor
against a [1] target) is given the example as batches of two and of three copies instead.
A mean-reduced loss gives the example's loss on both, a summed one 2x and 3x it; for any
loss affine in the number of copies, L(1) = 2 L(2) - L(3) is the example's loss exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from trackcheck.pipeline import PipelineError

LossFn = Callable[[Tensor, Tensor], Tensor]


def scalar_loss(loss_fn: Callable[[Any, Tensor], Tensor], out: Any, y: Tensor) -> Tensor:
    """``loss_fn(out, y)``, which must be a scalar tensor; a clear error otherwise."""
    v = loss_fn(out, y)
    if not isinstance(v, Tensor) or v.numel() != 1:
        got = list(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise PipelineError(
            f"the loss returned {got}, not a scalar tensor: reduce it to a mean over the batch "
            "(reduction='mean'), as training backpropagates one number"
        )
    return v.reshape(())


def per_example(loss_fn: Callable[[Any, Tensor], Tensor], out: Any, y: Tensor) -> Tensor:
    """[B] the loss of each example alone (out [B, ...] or a tuple of such, y [B, ...])."""

    def one(o: Any, t: Tensor) -> Tensor:
        return scalar_loss(loss_fn, _tmap(lambda v: v.unsqueeze(0), o), t.unsqueeze(0))

    def copies(o: Any, t: Tensor) -> Tensor:
        def of(k: int) -> Tensor:  # the example k times: [k, ...]
            return scalar_loss(
                loss_fn,
                _tmap(lambda v: v.unsqueeze(0).repeat_interleave(k, 0), o),
                t.unsqueeze(0).repeat_interleave(k, 0),
            )

        return 2 * of(2) - of(3)  # the module docstring: exact for mean and sum reductions

    try:
        return _each(one, out, y)
    except PipelineError:
        raise
    except _REFUSED as e:
        try:
            return _each(copies, out, y)
        except _REFUSED:
            raise e from None  # the loss's own complaint about a batch of one


_REFUSED = (RuntimeError, ValueError, TypeError, NotImplementedError, IndexError)


def _tmap(fn: Callable[[Tensor], Tensor], o: Any) -> Any:
    """``fn`` on a tensor, or on each tensor of a tuple."""
    return tuple(fn(v) for v in o) if isinstance(o, tuple) else fn(o)


def _each(fn: Callable[[Any, Tensor], Tensor], out: Any, y: Tensor) -> Tensor:
    """[B] ``fn(out[i], y[i])`` for every example: vmapped, else one call per example."""
    try:
        return torch.func.vmap(fn)(out, y)
    except PipelineError:
        raise
    except _REFUSED:
        return torch.stack([fn(_row(out, i), t) for i, t in enumerate(y)])


def _row(o: Any, i: int) -> Any:
    """Example ``i`` of a tensor, or of each tensor of a tuple."""
    return tuple(v[i] for v in o) if isinstance(o, tuple) else o[i]
