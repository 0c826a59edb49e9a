"""Tiny models for the tests: correct ones, and ones with a planted bug each."""

from __future__ import annotations

import torch
from torch import nn

from trackcheck.models import MLP


def scaled_head(factory, factor: float = 10.0):  # type: ignore[no-untyped-def]
    """Planted bug: the final layer's weights scaled up (outputs far too large at init)."""

    def build() -> nn.Module:
        model = factory()
        with torch.no_grad():
            model.head.weight.mul_(factor)
        return model

    return build


class SoftmaxBeforeCE(MLP):
    """Planted bug: probabilities returned where CrossEntropyLoss expects logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(-1)


class DetachedBody(MLP):
    """Planted bug: the hidden layers are cut off from the graph; only the head learns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).detach())
