"""contract: the pipeline's contract, first and fast. Targets fit the task and the model's
output, the loss is a per-example mean fed the kind of output it expects, every trainable
parameter reaches the optimizer, a training batch holds distinct examples, and the user's
training step clears old gradients and trains in train mode.

One forward pass on the first training examples (a few more, in eval mode, for a model that
computes its own loss), one training batch, and with a user step three calls of it: no
training run. Every problem found is listed, each with its fix (the config key or Python
argument to change), so the checks that need a working contract can point here instead of
repeating PyTorch's raw errors ("Target 10 is out of bounds", "element 0 of tensors does
not require grad").

This module holds the order of the probes; the parameters (_contract_params) and the probes
live in private modules, one per part of the contract: _contract_model (parameters, the
final op), _contract_targets (targets, output shape, the LM shift), _contract_loss (output
kind, loss reduction), _contract_batches (batch content), _contract_step (the user's
training step), recording into _contract_findings.Findings.
"""

from __future__ import annotations

from trackcheck.checks._shared import _streams
from trackcheck.checks.contract._contract_batches import check_batches
from trackcheck.checks.contract._contract_findings import Findings
from trackcheck.checks.contract._contract_loss import check_loss, check_output_kind
from trackcheck.checks.contract._contract_model import check_parameters, final_op
from trackcheck.checks.contract._contract_params import ContractParams
from trackcheck.checks.contract._contract_step import check_step
from trackcheck.checks.contract._contract_targets import check_shapes, check_shift, check_targets
from trackcheck.context import Context
from trackcheck.core import CheckResult
from trackcheck.registry import register

SEED_OFFSET = _streams.CONTRACT  # the training batches this check reads


@register("contract", ContractParams, fast=True, precondition=True)
def contract(ctx: Context, p: ContractParams) -> CheckResult:
    """Targets, output, loss, optimizer, batches and step fit together (one forward pass)."""
    f = Findings()
    model = ctx.new_model()
    model.train()  # the mode the first training step sees
    batch = ctx.head("train", max(p.n_examples, 2))
    out = ctx.forward(model, batch.x)  # with grad: its graph shows stray leaves, the final op
    trainable = check_parameters(ctx, model, out, f)
    op = final_op(out)
    out = out.detach()
    targets_ok = check_targets(ctx, ctx.targets("train"), f)
    shapes_ok = check_shapes(ctx, out, batch.y, f)
    checked = ["targets", "output shape", "parameters", "batch content"]
    if ctx.task.name == "lm":
        check_shift(ctx, batch, f, p)
    if ctx.task.classification and shapes_ok:
        check_output_kind(ctx, out, op, f, p)
        checked.append("output kind")
    if targets_ok and shapes_ok:
        check_loss(ctx, model, batch, out, f, p)
        checked.append("loss reduction")
    else:
        f.note(
            "The loss (and a training step) are not evaluated until the targets and the "
            "output shape fit."
        )
    check_batches(ctx, f, p, SEED_OFFSET)
    if ctx.pipeline.step is not None and trainable and targets_ok and shapes_ok:
        check_step(ctx, f, p, SEED_OFFSET + 1)
        checked.append("training step")
    return f.result(checked)
