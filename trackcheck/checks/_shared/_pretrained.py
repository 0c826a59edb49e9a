"""Whether the model factory loads trained weights, and which of them.

A factory that builds a random init gives other weights for another seed; one that loads a
checkpoint gives the same. So two builds with different seeds tell them apart, per parameter
tensor: a tensor that is equal in both, not constant (LayerNorm's ones and zero-initialised
biases are equal under any seed) and not the same storage (a factory that hands every call
the same module shares it; that is no checkpoint) is loaded; one that differs is fresh (a
new head on a pretrained backbone). The model counts as pretrained when a loaded tensor is
a matrix or kernel (a bias vector set to the prior is a deterministic init, not training).
``ctx.pretrained`` (``pretrained=`` in ``run``, the
``pretrained`` config key) overrides the detection: False never treats a model as loaded,
True always does (the loaded and fresh tensors are still told apart by the two builds). A
model instance passed to ``run`` (copied for every check) is the same under any seed
whatever its weights: it is read as loaded only when ``pretrained`` says so.

The init checks read this: on loaded weights the loss at start need only be at most chance
(loss_at_init), and the prior in the bias is judged only on a fresh output layer (init_bias);
the training checks judge the user's lr on the user's weights (loss_decreases: a checkpoint
at its minimum has no downward trend to show, only one upward to avoid).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trackcheck.checks._shared._fingerprint import fingerprint
from trackcheck.context import Context


@dataclass
class Weights:
    """Where the model's trainable weights come from."""

    loaded: list[str] = field(default_factory=list)  # equal across seeds, not constant
    fresh: list[str] = field(default_factory=list)  # drawn anew for each seed
    declared: bool | None = None  # what the user said (ctx.pretrained)
    # loaded tensors with 2 or more dimensions: a weight matrix or kernel equal under two
    # seeds is trained; a vector may be a deterministic init (a final bias set to the prior,
    # model.out_bias=auto), so vectors alone do not make a model pretrained
    matrices: int = 0

    @property
    def pretrained(self) -> bool:
        return bool(self.declared) if self.declared is not None else self.matrices > 0

    @property
    def resumed(self) -> bool:
        """Every random tensor is loaded: the checkpoint as it was saved (no new layer)."""
        return self.pretrained and not self.fresh

    def describe(self) -> str:
        how = "pretrained=true" if self.declared else "detected: equal under two seeds"
        if not self.fresh:
            return f"the weights are loaded ({how}; {len(self.loaded)} tensors)"
        new = ", ".join(self.fresh[:4]) + (", ..." if len(self.fresh) > 4 else "")
        return (
            f"the weights are loaded ({how}; {len(self.loaded)} tensors) but for "
            f"{len(self.fresh)} initialised anew ({new})"
        )


def _constant(t: torch.Tensor) -> bool:
    return t.numel() <= 1 or bool((t == t.reshape(-1)[0]).all())


def weights(ctx: Context) -> Weights:
    """The factory's weights, told apart by two builds (seeds ``ctx.seed`` and + 1), once
    per stage. Both builds are alive while compared: a freed tensor's memory can be handed
    to the next build, and equal addresses would then read as one shared storage."""
    key = ("weights", ctx.seed)
    if key in ctx.cache:
        return ctx.cache[key]  # type: ignore[no-any-return]
    found = Weights(declared=ctx.pretrained)
    instance = getattr(ctx.model_factory, "copies_an_instance", False)
    if instance and ctx.pretrained is None:
        found.declared = False  # one init copied: no seed tells loaded from random
    elif ctx.pretrained is not False:
        first = ctx.new_model()
        seen = {
            n: (fingerprint(q.detach()), q.data_ptr(), _constant(q.detach()))
            for n, q in first.named_parameters()
        }
        second = ctx.new_model(seed=ctx.seed + 1)
        for n, q in second.named_parameters():
            if n not in seen:
                continue
            digest, ptr, constant = seen[n]
            if fingerprint(q.detach()) != digest:
                found.fresh.append(n)
            elif not constant and q.data_ptr() != ptr:
                found.loaded.append(n)
                found.matrices += q.dim() >= 2
        del first, second
    ctx.cache[key] = found
    return found
