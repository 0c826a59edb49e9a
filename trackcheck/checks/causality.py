"""use backprop to chart dependencies (time): in an autoregressive model the output at
position t depends only on inputs at positions s <= t. The T x T map of gradient norms for
one sequence is logged as a picture; anything above its diagonal is a leak from the future.

Token ids have no gradient, so the map is taken at the output of the nn.Embedding that reads
them (a forward hook; the model runs unchanged, in eval mode so dropout stays off).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from trackcheck.checks._shared import _deps
from trackcheck.context import Context
from trackcheck.core import CheckResult, SkipCheck
from trackcheck.pipeline import primary
from trackcheck.registry import register


@dataclass
class CausalityParams:
    # None: applies to language models (task lm) and to token data whose output keeps the
    # time axis [B, T, ...]; false turns it off for a model that is bidirectional by design
    enabled: bool | None = None
    # "zero" above the diagonal means at most this fraction of the map's largest entry.
    # None: the machine epsilon of the model's dtype (float32: 1.2e-7). A masked attention
    # weight is exactly 0 after softmax, so a causal model gives exactly 0 there (measured:
    # 0.0 on the shipped GPT); an unmasked one leaks entries comparable to the diagonal
    zero_rtol: float | None = None
    # positions charted: the first seq_len inputs of one test sequence (None: all of them);
    # the map costs one vector-Jacobian product per position
    seq_len: int | None = 64
    max_listed: int = 6  # offending (t, s) pairs named in the message


def _applies(ctx: Context, p: CausalityParams) -> None:
    if p.enabled is False:
        raise SkipCheck("turned off (checks.causality.enabled=false)")
    if p.enabled is None and ctx.task.name != "lm" and ctx.data.kind != "tokens":
        raise SkipCheck(
            f"not an autoregressive model: the task is {ctx.task.name} on {ctx.data.kind} "
            "data (it runs for task lm or token data; force it with "
            "checks.causality.enabled=true)"
        )


# test sequences looked at to pick the one charted: the one with the most valid (unpadded)
# positions, so a short first sequence does not shrink the map
CANDIDATES = 8


@register("causality", CausalityParams)
def causality(ctx: Context, p: CausalityParams) -> CheckResult:
    """The output at position t depends only on inputs at positions up to t."""
    _applies(ctx, p)
    model = ctx.new_model()
    model.eval()
    x, keep = _sequence(ctx, p.seq_len)  # one sequence [1, T], keep [T]: its valid positions
    point = _deps.differentiable_input(model, lambda v: ctx.forward(model, v), x)
    with torch.no_grad():
        out = point.fn(point.h)
    if out.dim() < 2 or out.shape[1] != point.h.shape[1]:
        raise SkipCheck(
            f"the output {list(out.shape)} has no time axis matching the input "
            f"{list(point.h.shape)} at dim 1, so there is no position-wise causality to check"
        )
    m = _deps.dependency_map(point, dim=1, seed=ctx.seed, meter=ctx.meter)  # [T, T]: t <- s
    # padding is no position: its rows and columns are left out (order kept, so s > t in the
    # submatrix is s > t in the sequence); [T', T'] over the valid positions
    m = m[keep][:, keep]
    tol = _deps.zero_tolerance(point.h.dtype, p.zero_rtol)
    return _judge(m, tol, point.where, p.max_listed, int((~keep).sum()))


def _sequence(ctx: Context, seq_len: int | None) -> tuple[Any, Tensor]:
    """The test sequence with the most valid positions (``attention_mask`` 1) among the
    first few, as inputs [1, T], cut after its ``seq_len``-th valid position (a prefix is a
    valid sequence for a causal model); and the bool mask [T] of its valid positions."""
    batch = ctx.head("test", CANDIDATES)
    t = primary(batch.x)
    if t.dim() < 2:
        raise SkipCheck(f"the input {list(t.shape)} has no time axis at dim 1")
    valid = _valid_positions(batch.x, ctx.pipeline.mask_key, t.shape[:2])  # [B, T] bool
    row = int(valid.sum(1).argmax())  # the first of the longest
    keep = valid[row]
    if not bool(keep.any()):
        raise SkipCheck("the test sequences charted are all padding (attention_mask all 0)")
    at = keep.nonzero().flatten()  # valid positions, ascending
    n = len(at) if seq_len is None else min(seq_len, len(at))
    end = int(at[n - 1]) + 1
    n_time = t.shape[1]

    def cut(v: Any) -> Any:  # row `row`, first `end` positions of every [B, T, ...] tensor
        if isinstance(v, Tensor) and v.dim() >= 2 and v.shape[1] == n_time:
            return v[row : row + 1, :end]
        return v[row : row + 1] if isinstance(v, Tensor) and v.dim() >= 1 else v

    if isinstance(batch.x, Mapping):
        x: Any = {k: cut(v) for k, v in batch.x.items()}
    elif isinstance(batch.x, tuple):
        x = tuple(cut(v) for v in batch.x)
    else:
        x = cut(batch.x)
    return x, keep[:end].cpu()


def _valid_positions(x: Any, mask_key: str | None, shape: torch.Size) -> Tensor:
    """[B, T] bool: the positions the inputs' ``attention_mask`` marks valid (all, without)."""
    mask = x.get(mask_key) if isinstance(x, Mapping) and mask_key else None
    if isinstance(mask, Tensor) and mask.shape == shape:
        return mask != 0
    return torch.ones(shape, dtype=torch.bool, device=primary(x).device)


def _judge(m: Tensor, tol: float, where: str, k: int, n_pad: int = 0) -> CheckResult:
    t = m.shape[0]
    scale = float(m.max())
    rel = m / scale if scale > 0 else m  # [T, T], relative to the largest entry
    future = torch.ones_like(rel, dtype=torch.bool).triu(1)  # s > t
    leaks = (rel > tol) & future
    max_leak = float(rel[future].max()) if t > 1 else 0.0
    metrics = {
        "seq_len": float(t),
        "max_future_leak": max_leak,  # largest entry above the diagonal / largest entry
        "leaking_pairs": float(leaks.sum()),
        # outputs that depend on their own position's input (1.0 for a usual causal model)
        "self_dependent": float((rel.diagonal() > tol).float().mean()),
        "tolerance": tol,
        "padded_positions": float(n_pad),  # left out of the map (attention_mask 0)
    }
    padded = f"; {n_pad} padded positions left out" if n_pad else ""
    figure = _deps.heatmap(
        m,
        leaks,
        f"gradient of output t w.r.t. input s\n(one sequence, at {where}{padded})",
        "input position s",
        "output position t",
        diagonal=True,
    )
    threshold = f"above diagonal <= {tol:.2g} x max"
    problem = ""
    if bool(leaks.any()):
        listed = ", ".join(f"(t={i}, s={j})" for i, j in _deps.pairs(leaks, k))
        hint = _likely_cause(leaks, future)
        problem = (
            f"outputs see the future: {int(leaks.sum())} of {t * (t - 1) // 2} pairs with "
            f"s > t carry gradient, e.g. {listed}; largest {max_leak:.3g} x the map's "
            f"maximum, expected 0 (tolerance {tol:.2g}). {hint}. If the model "
            "is bidirectional by design, set checks.causality.enabled=false"
        )
    exact = "exactly 0" if max_leak == 0 else f"{max_leak:.2g} x the maximum"
    passed = (
        f"over {t} positions, output t depends only on inputs s <= t (gradients at "
        f"{where}; largest entry above the diagonal {exact}, tolerance {tol:.2g}{padded})"
    )
    return _deps.map_result(
        "causality",
        m,
        "causality",
        problem,
        passed,
        where=where,
        metrics=metrics,
        figure=figure,
        value=max_leak,
        threshold=threshold,
    )


def _likely_cause(leaks: Tensor, future: Tensor) -> str:
    """Name the bug from the leaks' shape: the whole upper triangle means no mask at all; a
    band k positions wide means a mask that lets t see t+1 (each of k layers adds one)."""
    if bool((leaks == future).all()):
        return (
            "Every future position leaks: the causal mask is missing (is_causal=False, no "
            "attn_mask) or a layer is bidirectional"
        )
    where = leaks.nonzero()  # [n, 2] rows (t, s)
    ahead = int((where[:, 1] - where[:, 0]).max())
    return (
        f"Leaks reach at most {ahead} position(s) ahead, not the whole future: a causal "
        "mask off by one (t sees t+1, e.g. tril(diagonal=1)); each layer with such a mask "
        "adds one position of reach"
    )
