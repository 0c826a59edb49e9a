"""finite: the inputs, every module's output, the loss and every gradient are finite.

The first training examples' inputs are scanned (no model), then one training batch goes
forward and backward through a fresh model with a hook on every module
(:mod:`trackcheck.checks._shared._nonfinite`). A NaN or Inf is named where it starts: the data
example, the first module whose output turns non-finite (with the example), the loss, or
the first module in backward order whose input gradient does. Masked attention is fine:
only module outputs are looked at, and a masked softmax's output is finite.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackcheck.checks._shared._nonfinite import Origin, data_origin, locate
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.registry import register


@dataclass
class FiniteParams:
    # training examples (the first ones, in dataset order) whose inputs and targets are
    # scanned for NaN/Inf without the model; their index in the dataset is reported. Reading
    # examples is most of this check's cost (1024 digits: 0.1 s of item reads); 256 is four
    # batches of 64 (a NaN further on is named when a check that trains reaches it)
    scan_examples: int = 256


@register("finite", FiniteParams, fast=True)
def finite(ctx: Context, p: FiniteParams) -> CheckResult:
    """Inputs, module outputs, loss and gradients are finite (or where a NaN/Inf starts)."""
    head = ctx.head("train", p.scan_examples)
    origin = data_origin(head)
    where = "among the first training examples (the example is its index in the dataset)"
    if origin is None:  # one batch in dataset order: the example is the dataset index too
        batch = ctx.head("train", ctx.data.batch_size)
        origin = locate(ctx, batch)
        where = (
            f"on the first {len(batch)} training examples (forward and backward; the example"
            " is its index in the dataset)"
        )
    ctx.take_nonfinite()  # its own losses: not another check's finding
    metrics = origin.metrics()
    if not origin.found:
        msg = (
            f"{len(head)} examples' inputs and targets, then every module output, the loss "
            "and every gradient of one training step are finite"
        )
        return CheckResult("finite", Status.PASS, msg, metrics=metrics, value=0.0)
    return CheckResult(
        "finite",
        Status.FAIL,
        f"{origin.value} {where}: {origin.describe()}",
        metrics=metrics,
        value=1.0,
        threshold="no NaN/Inf",
    )


__all__ = ["Origin", "finite"]
