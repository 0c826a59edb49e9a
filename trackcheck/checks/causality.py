"""use backprop to chart dependencies (time): in an autoregressive model the output at
position t depends only on inputs at positions s <= t. The T x T map of gradient norms for
one sequence is logged as a picture; anything above its diagonal is a leak from the future.

Token ids have no gradient, so the map is taken at the output of the nn.Embedding that reads
them (a forward hook; the model runs unchanged, in eval mode so dropout stays off).

What is charted:

* a language model: its token inputs (the content tensor);
* an encoder-decoder (a second token input that holds the targets, as teacher forcing feeds
  them): the decoder's inputs, not the source, which the encoder reads whole by design. Fed
  one step at a time, they reach no embedding as one tensor, so the map is taken by changing
  one token at a time (T + 1 forwards). When those inputs are the targets at the same
  position (the model shifts them inside, as a teacher-forced decoder does), output t may
  read positions before t only: reading its own position is reading its own target;
* per-token classification (task token: tags, not next tokens) is skipped: a tagger reads
  the whole sentence by design.
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
from trackcheck.tasks import ALIGNED_SHARE, alignment, integer_sequences


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
    if p.enabled is None and ctx.task.per_position and not ctx.task.autoregressive:
        why = f"; {ctx.task_note}" if ctx.task_note else ""
        raise SkipCheck(
            f"per-token classification (task {ctx.task.name}{why}): each position's class may "
            "depend on the whole sequence, so a bidirectional encoder is correct by design; "
            "causality judges next-token prediction (task lm; force it with "
            "checks.causality.enabled=true)"
        )
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
    x, y, keep = _sequence(ctx, p.seq_len)  # one sequence [1, T], keep [T]: valid positions
    decoder = _decoder_input(x, y, ctx.pipeline.ignore_index)
    if decoder is not None:
        return _judge_decoder(ctx, model, x, decoder, keep, p)
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


def _sequence(ctx: Context, seq_len: int | None) -> tuple[Any, Tensor, Tensor]:
    """The test sequence with the most valid positions (``attention_mask`` 1) among the
    first few, as inputs [1, T], cut after its ``seq_len``-th valid position (a prefix is a
    valid sequence for a causal model); its targets (cut alike); and the bool mask [T] of
    its valid positions."""
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
    return x, cut(batch.y), keep[:end].cpu()


@dataclass
class _Decoder:
    key: Any  # where the decoder's inputs are in x: an index or a key
    ids: Tensor  # [1, T] the decoder's token inputs
    same: bool  # they hold the target at the same position (shifted inside the model)


def _decoder_input(x: Any, y: Tensor, ignore_index: int) -> _Decoder | None:
    """The decoder's inputs of an encoder-decoder: a token input other than the content
    tensor whose values are the targets (at the same position, or one on, as
    ``shift_right(labels)`` gives them), the one that agrees with the targets most; None
    for a model with one token input (a language model) or when the content tensor agrees
    most."""
    if not isinstance(x, Mapping | tuple | list) or y.is_floating_point() or y.dim() != 2:
        return None
    content = primary(x)
    best: tuple[float, int, _Decoder] | None = None  # (share, content first on a tie, ...)
    for key, v in integer_sequences(x, y):
        same, nxt = alignment(v, y, ignore_index)
        score = (max(same, nxt), int(v is content), _Decoder(key, v, same >= nxt))
        if score[0] >= ALIGNED_SHARE and (best is None or score[:2] > best[:2]):
            best = score
    # the content tensor best aligned with the targets: a language model (source and target
    # sentences padded alike agree on their padding, so the best aligned one is the decoder's)
    return None if best is None or best[1] else best[2]


def _replace(x: Any, key: Any, v: Tensor) -> Any:
    if isinstance(x, Mapping):
        return {**x, key: v}
    return type(x)(v if i == key else u for i, u in enumerate(x))


@torch.no_grad()
def _change_map(ctx: Context, model: torch.nn.Module, x: Any, d: _Decoder) -> Tensor:
    """[T_out, T_in] float64: the norm of the change of output t when the decoder's input
    token s is replaced by another one of its tokens, one position at a time; exactly 0
    where output t does not read input s (the same forward on the same values)."""
    ids = d.ids
    base = ctx.forward(model, x)  # [1, T_out, ...]
    if base.dim() < 2:
        raise SkipCheck(f"the output {list(base.shape)} has no time axis at dim 1")
    values = ids.unique()
    cols = []
    for s in range(ids.shape[1]):
        other = values[values != ids[0, s]]
        changed = ids.clone()
        changed[0, s] = other[0] if len(other) else ids[0, s] + 1
        out = ctx.forward(model, _replace(x, d.key, changed))
        cols.append((out - base).reshape(1, out.shape[1], -1).double().norm(dim=-1)[0].cpu())
    return torch.stack(cols, 1)


def _judge_decoder(
    ctx: Context, model: torch.nn.Module, x: Any, d: _Decoder, keep: Tensor, p: CausalityParams
) -> CheckResult:
    """Causality of an encoder-decoder, judged on the decoder's inputs (the source is read
    whole by design)."""
    m = _change_map(ctx, model, x, d)
    if m.shape[0] != m.shape[1]:
        raise SkipCheck(
            f"the output has {m.shape[0]} positions for {m.shape[1]} decoder inputs: no "
            "position-wise causality to check"
        )
    m = m[keep][:, keep]
    where = f"the decoder's inputs (input {d.key!r}, one token changed at a time)"
    if d.same:
        where += "; they are the targets, shifted inside the model"
    tol = _deps.zero_tolerance(torch.float32, p.zero_rtol)
    return _judge(m, tol, where, p.max_listed, int((~keep).sum()), strict=d.same)


def _valid_positions(x: Any, mask_key: str | None, shape: torch.Size) -> Tensor:
    """[B, T] bool: the positions the inputs' ``attention_mask`` marks valid (all, without)."""
    mask = x.get(mask_key) if isinstance(x, Mapping) and mask_key else None
    if isinstance(mask, Tensor) and mask.shape == shape:
        return mask != 0
    return torch.ones(shape, dtype=torch.bool, device=primary(x).device)


def _judge(
    m: Tensor, tol: float, where: str, k: int, n_pad: int = 0, strict: bool = False
) -> CheckResult:
    """``strict``: the inputs are the targets at the same position, so output t may read
    inputs s < t only (s = t is its own target)."""
    t = m.shape[0]
    scale = float(m.max())
    rel = m / scale if scale > 0 else m  # [T, T], relative to the largest entry
    future = torch.ones_like(rel, dtype=torch.bool).triu(0 if strict else 1)  # s > t (s >= t)
    leaks = (rel > tol) & future
    max_leak = float(rel[future].max()) if bool(future.any()) else 0.0
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
    ge = ">=" if strict else ">"
    if bool(leaks.any()):
        listed = ", ".join(f"(t={i}, s={j})" for i, j in _deps.pairs(leaks, k))
        hint = _likely_cause(leaks, future, strict)
        problem = (
            f"outputs see the future: {int(leaks.sum())} of {int(future.sum())} pairs with "
            f"s {ge} t carry gradient, e.g. {listed}; largest {max_leak:.3g} x the map's "
            f"maximum, expected 0 (tolerance {tol:.2g}). {hint}. If the model "
            "is bidirectional by design, set checks.causality.enabled=false"
        )
    exact = "exactly 0" if max_leak == 0 else f"{max_leak:.2g} x the maximum"
    passed = (
        f"over {t} positions, output t depends only on inputs s {'<' if strict else '<='} t "
        f"(gradients at "
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


def _likely_cause(leaks: Tensor, future: Tensor, strict: bool = False) -> str:
    """Name the bug from the leaks' shape, only where the shape shows it: the whole upper
    triangle is no mask at all (or a normalisation over time); a full band k positions wide
    is a mask that lets t see t+1, compounded over k layers (each adds one position of
    reach); leaks confined to blocks are positions regrouped by a reshape; anything else is
    described, not named."""
    if strict and bool(leaks.any()) and bool((leaks == leaks.diag().diag()).all()):
        return (
            "Each output reads its own target: the decoder is fed the targets unshifted "
            "(teacher forcing feeds target t-1 at step t: decoder_input_ids = "
            "shift_right(labels), a start token first)"
        )
    if bool((leaks == future).all()):
        return (
            "Every future position leaks: the causal mask is missing (is_causal=False, no "
            "attn_mask), a layer is bidirectional, or something normalises or pools over the "
            "time axis (BatchNorm over [B, T] tokens, a mean over positions)"
        )
    where = leaks.nonzero()  # [n, 2] rows (t, s)
    t_idx, s_idx = where[:, 0], where[:, 1]
    ahead = int((s_idx - t_idx).max())
    n = leaks.shape[0]
    pos = torch.arange(n)
    gap = pos[None, :] - pos[:, None]  # [T, T]: s - t
    band = future & (gap <= ahead)
    if bool((leaks == band).all()):
        return (
            f"Leaks reach at most {ahead} position(s) ahead and fill that whole band: a "
            "causal mask off by one (t sees t+1, e.g. tril(diagonal=1)) compounded over "
            f"{ahead} layer(s), each adding one position of reach"
            + (f", or one mask off by {ahead}" if ahead > 1 else "")
        )
    block = _block(leaks)
    shape = (
        f"leaks reach up to {ahead} positions ahead, {int(leaks.sum())} of the "
        f"{int(band.sum())} pairs within that reach, not the full band an off-by-one mask "
        "gives"
    )
    if block:
        return (
            f"The {shape}, and stay inside blocks of {block} positions: positions regrouped "
            "by a reshape, e.g. heads and time mixed (a view of [B, T, C] as [B, nh, T, hs] "
            "without the transpose) or an operation over chunks of positions"
        )
    return (
        f"The {shape}: look for a reshape or view that mixes the time axis with another "
        "(heads, batch), or a normalisation or pooling over time"
    )


def _block(leaks: Tensor) -> int:
    """The smallest block size b (a divisor of T, 1 < b < T) such that every leak (t, s)
    has t and s in the same block of b positions; 0 when there is none."""
    n = leaks.shape[0]
    where = leaks.nonzero()
    for b in range(2, n):
        if n % b == 0 and bool((where[:, 0] // b == where[:, 1] // b).all()):
            return b
    return 0
