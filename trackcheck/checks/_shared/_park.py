"""One model training on the device at a time.

A check that trains two models in turns (input_independent's real-input model and its
blanked-input baseline, the contract's reference step on a copy) parks the idle one in host
memory: its parameters, buffers, gradients and optimizer state. So the stage never needs more
device memory than one training run of the user's model, which is what the user's job needs
anyway: a model that fits its own training fits the checklist. On the CPU there is no other
memory to park in, and parking does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import Tensor, nn

HOST = torch.device("cpu")
M = TypeVar("M", bound=nn.Module)


def move(device: torch.device, model: M, opt: torch.optim.Optimizer | None = None) -> M:
    """``model`` (its gradients too) and ``opt``'s state moved to ``device``, in place: the
    parameters stay the same objects, so the optimizer still holds them. Returns ``model``."""
    model.to(device)
    if opt is None:
        return model
    for state in opt.state.values():
        for k, v in state.items():
            # Adam's "step" lives on the host unless capturable/fused: leave it there
            if isinstance(v, Tensor) and not (k == "step" and v.device.type == "cpu"):
                state[k] = v.to(device)
    return model


@contextmanager
def on_device(
    device: torch.device, model: nn.Module, opt: torch.optim.Optimizer | None = None
) -> Iterator[None]:
    """``model`` and ``opt`` on ``device`` inside the block, parked in host memory after."""
    if device.type == "cpu":
        yield
        return
    move(device, model, opt)
    try:
        yield
    finally:
        move(HOST, model, opt)
