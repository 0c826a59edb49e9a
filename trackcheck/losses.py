"""The user's loss, measured per example: the checks that compare examples (held-out gains,
prediction dynamics, loss at init) need ``[B]`` losses, and a user's loss returns a scalar.

``torch.func.vmap`` calls the loss on each example as a batch of one (``out[i:i+1]``,
``y[i:i+1]``), all at once; a loss vmap cannot batch (a ``.item()`` inside, data-dependent
control flow) is called example by example instead.

A loss that cannot take a batch of one (``BCELoss()(out.squeeze(), y)``, as
pytorch/examples' siamese network writes it: a [1, 1] output squeezes to a 0-d tensor
against a [1] target) is given the example as batches of two and of three copies instead.
A mean-reduced loss gives the example's loss on both, a summed one 2x and 3x it; for any
loss affine in the number of copies, L(1) = 2 L(2) - L(3) is the example's loss exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from trackcheck.pipeline import PipelineError

LossFn = Callable[[Tensor, Tensor], Tensor]


def scalar_loss(loss_fn: LossFn, out: Tensor, y: Tensor) -> Tensor:
    """``loss_fn(out, y)``, which must be a scalar tensor; a clear error otherwise."""
    v = loss_fn(out, y)
    if not isinstance(v, Tensor) or v.numel() != 1:
        got = list(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise PipelineError(
            f"the loss returned {got}, not a scalar tensor: reduce it to a mean over the batch "
            "(reduction='mean'), as training backpropagates one number"
        )
    return v.reshape(())


def per_example(loss_fn: LossFn, out: Tensor, y: Tensor) -> Tensor:
    """[B] the loss of each example alone (out [B, ...], y [B, ...])."""

    def one(o: Tensor, t: Tensor) -> Tensor:
        return scalar_loss(loss_fn, o.unsqueeze(0), t.unsqueeze(0))

    def copies(o: Tensor, t: Tensor) -> Tensor:
        def of(k: int) -> Tensor:  # the example k times: [k, ...]
            return scalar_loss(
                loss_fn,
                o.unsqueeze(0).repeat_interleave(k, 0),
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


def _each(fn: Callable[[Tensor, Tensor], Tensor], out: Tensor, y: Tensor) -> Tensor:
    """[B] ``fn(out[i], y[i])`` for every example: vmapped, else one call per example."""
    try:
        return torch.func.vmap(fn)(out, y)
    except PipelineError:
        raise
    except _REFUSED:
        return torch.stack([fn(o, t) for o, t in zip(out, y, strict=True)])
