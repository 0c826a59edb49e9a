"""The user's loss, measured per example: the checks that compare examples (held-out gains,
prediction dynamics, loss at init) need ``[B]`` losses, and a user's loss returns a scalar.

``torch.func.vmap`` calls the loss on each example as a batch of one (``out[i:i+1]``,
``y[i:i+1]``), all at once; a loss vmap cannot batch (a ``.item()`` inside, data-dependent
control flow) is called example by example instead.
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

    try:
        return torch.func.vmap(one)(out, y)
    except PipelineError:
        raise
    except (RuntimeError, ValueError, TypeError, NotImplementedError):
        return torch.stack([one(o, t) for o, t in zip(out, y, strict=True)])
