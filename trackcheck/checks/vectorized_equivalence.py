"""generalize a special case: the batched forward equals a loop of single-example forwards
(eval mode), and equals the user's loop-based reference implementation where one is given.

Tolerances are torch.testing.assert_close's defaults for the output dtype, and a mismatch is
reported with its message (greatest absolute and relative difference, where, how many).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import slice_inputs
from trackcheck.registry import register

# torch.testing.assert_close's default (rtol, atol) per dtype, as its documentation tabulates
DEFAULT_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


@dataclass
class VectorizedEquivalenceParams:
    n_examples: int = 8  # the loop makes this many single-example forwards
    # elementwise |batched - expected| <= atol + rtol * |expected|; None: torch.testing's
    # default for the output dtype (float32: rtol 1.3e-6, atol 1e-5)
    rtol: float | None = None
    atol: float | None = None
    # outside that tolerance but with a normwise relative error max|diff| / max|expected| of
    # at most rounding_factor x rtol (float32: 1.3e-4) is a WARN, not a FAIL: kernels pick
    # other summation orders for other batch sizes, and such float rounding grows like
    # eps*sqrt(n) per reduction, about 30x rtol after 100 layers of 4096-wide sums. A batch
    # statistic moves outputs by O(1/B) (1e-3 even at B=1000; measured 0.06 for x - x.mean(0)
    # on the shipped ResNet at B=8)
    rounding_factor: float = 100.0


@dataclass
class Comparison:
    """batched vs one expected tensor, in the terms torch.testing uses."""

    name: str
    max_abs: float
    max_rel: float
    normwise: float  # max |a - e| / max |e|: the size of the difference against the output's
    ratio: float  # max over elements of |a - e| / (atol + rtol |e|): <= 1 is within tolerance
    per_example: list[float]  # the same ratio, per example
    mismatch: str  # torch.testing.assert_close's message; "" when close


def _compare(name: str, actual: Tensor, expected: Tensor, rtol: float, atol: float) -> Comparison:
    a, e = actual.detach().cpu(), expected.detach().cpu()
    if a.shape != e.shape:
        msg = f"shapes differ: batched {list(a.shape)}, {name} {list(e.shape)}"
        return Comparison(name, math.inf, math.inf, math.inf, math.inf, [], msg)
    a64, e64 = a.double(), e.double()
    # equal elements (inf == inf too) differ by 0; NaN on either side is a mismatch
    diff = torch.where(a64 == e64, 0.0, (a64 - e64).abs().nan_to_num(nan=math.inf))
    # 0/0 (equal, nothing allowed) counts as 0; a difference with nothing allowed as inf
    ratio = torch.where(diff == 0, torch.zeros_like(diff), diff / (atol + rtol * e64.abs()))
    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / e64.abs())
    try:
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, check_dtype=False)
        mismatch = ""
    except AssertionError as err:
        lines = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
        mismatch = "; ".join(lines)
    if not a.numel():
        return Comparison(name, 0.0, 0.0, 0.0, 0.0, [], mismatch)
    max_abs, scale = float(diff.max()), float(e64.abs().max())
    return Comparison(
        name,
        max_abs,
        float(rel.max()),
        0.0 if max_abs == 0 else max_abs / scale if scale > 0 else math.inf,
        float(ratio.max()),
        ratio.reshape(len(a), -1).amax(1).tolist(),  # [B] worst ratio per example
        mismatch,
    )


@torch.no_grad()
def _loop(forward: Callable[[Any], Any], x: Any, n: int, batched: Tensor) -> Tensor | str:
    """Single-example forwards, concatenated; a string says why they cannot be stacked."""
    outs = []
    for i in range(n):
        o = forward(slice_inputs(x, slice(i, i + 1)))
        if not isinstance(o, Tensor) or o.shape != (1, *batched.shape[1:]):
            got = list(o.shape) if isinstance(o, Tensor) else type(o).__name__
            return (
                f"one example gives output {got}, expected {[1, *batched.shape[1:]]} (the "
                f"batched output is {list(batched.shape)}): a squeeze() without a dim drops "
                "the batch axis at batch size 1, or the model hard-codes a batch size"
            )
        outs.append(o)
    return torch.cat(outs)


@register("vectorized_equivalence", VectorizedEquivalenceParams)
def vectorized_equivalence(ctx: Context, p: VectorizedEquivalenceParams) -> CheckResult:
    """The batched forward equals single-example forwards (and the user's reference)."""
    model = ctx.new_model()
    model.eval()  # BatchNorm on running statistics, dropout off: the forward is per example
    x, y = ctx.head("test", p.n_examples)
    with torch.no_grad():
        batched = ctx.forward(model, x)
    default_rtol, default_atol = DEFAULT_TOLERANCES.get(batched.dtype, (0.0, 0.0))
    rtol = default_rtol if p.rtol is None else p.rtol
    atol = default_atol if p.atol is None else p.atol

    looped = _loop(lambda v: ctx.forward(model, v), x, len(y), batched)
    if isinstance(looped, str):
        return _shape_failure(looped, len(y))
    comparisons = [_compare("loop of single-example forwards", batched, looped, rtol, atol)]
    if ctx.reference_fn is not None:
        comparisons.append(_reference(ctx.reference_fn, model, x, batched, rtol, atol))
    source = "torch.testing defaults" if p.rtol is None and p.atol is None else "configured"
    tol = f"|diff| <= {atol:.2g} + {rtol:.2g} |expected| ({batched.dtype}, {source})"
    return _judge(comparisons, rtol, atol, p.rounding_factor, len(y), tol)


def _reference(
    fn: Callable[..., Tensor],
    model: nn.Module,
    x: Any,
    batched: Tensor,
    rtol: float,
    atol: float,
) -> Comparison:
    with torch.no_grad():
        ref = fn(model, x)
    if not isinstance(ref, Tensor):
        raise TypeError(f"the reference returned {type(ref).__name__}, expected a tensor")
    return _compare("reference implementation", batched, ref, rtol, atol)


def _shape_failure(why: str, n: int) -> CheckResult:
    return CheckResult(
        "vectorized_equivalence",
        Status.FAIL,
        f"the batched forward and a loop over {n} single examples cannot be compared: {why}",
        value=math.inf,
        threshold="same shape",
    )


def _verdict(c: Comparison, rtol: float, factor: float) -> Status:
    if c.ratio <= 1.0:
        return Status.PASS
    return Status.WARN if c.normwise <= factor * rtol else Status.FAIL


def _judge(
    comps: list[Comparison], rtol: float, atol: float, factor: float, n: int, tol: str
) -> CheckResult:
    severity = [Status.PASS, Status.WARN, Status.FAIL]
    worst = max(comps, key=lambda c: (severity.index(_verdict(c, rtol, factor)), c.ratio))
    status = _verdict(worst, rtol, factor)
    return CheckResult(
        "vectorized_equivalence",
        status,
        _message(status, comps, worst, factor, n, tol),
        metrics=_metrics(comps, rtol, atol, n),
        tables=_tables(comps, n),
        value=worst.ratio,
        threshold=f"ratio <= 1 (warn: normwise <= {factor * rtol:.2g})",
    )


def _metrics(comps: list[Comparison], rtol: float, atol: float, n: int) -> dict[str, float]:
    metrics: dict[str, float] = {"rtol": rtol, "atol": atol, "examples": float(n)}
    for c in comps:
        key = "loop" if c.name.startswith("loop") else "reference"
        metrics.update(
            {
                f"{key}_max_abs_diff": c.max_abs,
                f"{key}_max_rel_diff": c.max_rel,
                f"{key}_normwise_diff": c.normwise,
                f"{key}_tolerance_ratio": c.ratio,
            }
        )
    return metrics


def _tables(comps: list[Comparison], n: int) -> dict[str, dict[str, list[Any]]]:
    """One row per comparison, and the per-example tolerance ratios [n] side by side."""
    return {
        "comparisons": {
            "columns": [
                "comparison",
                "max_abs_diff",
                "max_rel_diff",
                "normwise_diff",
                "tolerance_ratio",
            ],
            "rows": [[c.name, c.max_abs, c.max_rel, c.normwise, c.ratio] for c in comps],
        },
        "per_example": {
            "columns": ["example"] + [f"{c.name} (ratio)" for c in comps],
            "rows": [
                [i] + [c.per_example[i] if i < len(c.per_example) else None for c in comps]
                for i in range(n)
            ],
        },
    }


def _message(
    status: Status, comps: list[Comparison], worst: Comparison, factor: float, n: int, tol: str
) -> str:
    if status == Status.PASS:
        summary = "; ".join(
            f"{c.name}: max abs diff {c.max_abs:.3g}, max rel diff {c.max_rel:.3g}" for c in comps
        )
        return f"batched forward of {n} examples matches ({summary}; tolerance {tol})"
    if status == Status.WARN:
        return (
            f"batched forward differs from the {worst.name} by {worst.ratio:.3g} x the "
            f"tolerance ({tol}), but only {worst.normwise:.2g} of the largest output (<= "
            f"{factor:g} x rtol): the size of float rounding from batch-size-dependent "
            f"kernels rather than of a batch statistic: {worst.mismatch}"
        )
    return (
        f"batched forward differs from the {worst.name}, by {worst.ratio:.3g} x the "
        f"tolerance ({tol}) and {worst.normwise:.2g} of the largest output (more than "
        f"float rounding, {factor:g} x rtol): {worst.mismatch}. Expected equal outputs "
        "in eval mode. "
        "Usual causes: a statistic over the batch in forward (x - x.mean(0), outputs "
        "normalised over dim 0), view/reshape mixing the batch axis, or state carried "
        "between calls"
        + ("; or the reference itself is wrong" if worst.name.startswith("reference") else "")
    )
