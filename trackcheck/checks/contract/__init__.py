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

This module holds the parameters and the order of the probes; the probes themselves live in
private modules, one per part of the contract: _contract_model (parameters, the final op),
_contract_targets (targets, output shape, the LM shift), _contract_loss (output kind, loss
reduction), _contract_batches (batch content), _contract_step (the user's training step),
recording into _contract_findings.Findings.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackcheck.checks._shared import _streams
from trackcheck.checks.contract._contract_batches import check_batches, check_layout
from trackcheck.checks.contract._contract_findings import Findings
from trackcheck.checks.contract._contract_loss import check_loss, check_output_kind, judge_sum
from trackcheck.checks.contract._contract_model import check_parameters, final_op
from trackcheck.checks.contract._contract_step import check_step
from trackcheck.checks.contract._contract_targets import check_shapes, check_shift, check_targets
from trackcheck.context import Context
from trackcheck.core import CheckResult
from trackcheck.registry import register

SEED_OFFSET = _streams.CONTRACT  # the training batches this check reads


@dataclass
class ContractParams:
    # examples the contract is read on (one forward pass); at least 2, so that the loss of
    # the batch can be compared with the losses of its two halves
    n_examples: int = 64
    # an output row "is" probabilities when it lies in [0, 1] and sums to 1 within this, and
    # log-probabilities when its logsumexp is 0 within this: float32 softmax sums to 1 within
    # ~1e-6 even over a 50k vocabulary (pairwise summation), while logits at init miss it
    # by O(1); 1e-4 leaves a 100x margin on both sides
    prob_atol: float = 1e-4
    # any per-example mean (plain, class-weighted, over non-ignored tokens: a ratio of sums)
    # lies between the losses of the batch's two halves, exactly; this is the float32
    # rounding margin, relative. Measured: a plain mean equals its halves' mean within 5e-8;
    # GPT-2's eval-mode rows are bit-identical between batches of 32 and 64 on CPU. A sum
    # misses the range by the smaller half's loss (about ln C at init): orders above this
    mean_rtol: float = 1e-3
    # loss(batch) / mean(loss(half), loss(other half)) = 2**k: k = 0 for a mean, k = 1 for a
    # sum. Outside the halves' range, k above the midpoint (on the log scale) fails as a
    # loss that scales with the batch size; below it warns (a loss that depends on the
    # batch's composition, e.g. in-batch negatives)
    max_scaling_exponent: float = 0.5
    # LM tuple batches: "the targets are the next tokens" when y[:, t] == x[:, t + 1] on more
    # than this share of positions (1.0 under the convention; unrelated text agrees on about
    # sum_i p_i^2 of them, 0.06 for English characters): the majority is a wide midpoint
    shift_share: float = 0.5
    # a sampler without replacement repeats an example in a batch only as often as the
    # dataset holds copies of it: one example filling more than this share of a batch (and
    # not of the dataset's items) is a collate or sampler that repeats one item
    max_repeat_share: float = 0.5
    # under uniform sampling a batch's share of repeated rows is at most the dataset's in
    # expectation (a batch of B rows sees each copy-pair with probability ~(B/N)^2, the
    # first dataset_items items with ~(m/N)^2 >= that); more than this excess warns
    # (samplers with replacement or class oversampling repeat rows on purpose: not a fail)
    excess_duplicates: float = 0.25
    dataset_items: int = 256  # items read by index for the dataset's own duplicate share
    # the user's step: the .grad it leaves after a second call must equal what the same call
    # leaves on a copy whose .grad was cleared, within this (relative). Same parameters, batch
    # and RNG state: measured 0.0 on CPU (dropout MLP, BatchNorm ResNet); CUDA's atomic adds
    # can differ by float rounding, orders below this. A step without zero_grad is off by
    # |g1| / |g1 + g2|, about 0.5-1
    grad_rtol: float = 1e-3
    # a summed loss is a choice when the user's step clips: the gradient norm the optimizer
    # steps with, over the norm of the loss's gradient on the same batch and weights, is 1
    # within float rounding (~1e-6: the same backward twice) for a step that does not touch
    # the gradient, and max_norm / norm for one that clips (0.01-0.1 for a summed loss at
    # init, whose gradient norm is B times a mean's); below 1 - this counts as clipping
    clip_rtol: float = 1e-3


@register("contract", ContractParams, fast=True, precondition=True)
def contract(ctx: Context, p: ContractParams) -> CheckResult:
    """Targets, output, loss, optimizer, batches and step fit together (one forward pass)."""
    f = Findings()
    model = ctx.new_model()
    model.train()  # the mode the first training step sees
    batch = ctx.head("train", max(p.n_examples, 2))
    if not check_layout(batch, f):  # nothing below can read a batch without rows
        return f.result([])
    out = ctx.forward(model, batch.x)  # with grad: its graph shows stray leaves, the final op
    trainable = check_parameters(ctx, model, out, f)
    op = final_op(out)
    out = ctx.pipeline.like(out.detach(), out)  # loss_takes: whole: the rest goes with it
    targets_ok = check_targets(ctx, ctx.targets("train"), f)
    shapes_ok = check_shapes(ctx, out, batch.y, f)
    checked = ["targets", "output shape", "parameters", "batch content"]
    if ctx.task.name == "lm":
        check_shift(ctx, batch, f, p)
    if ctx.task.classification and shapes_ok:
        check_output_kind(ctx, out, op, f, p)
        checked.append("output kind")
    summed = None
    if targets_ok and shapes_ok:
        summed = check_loss(ctx, model, batch, out, f, p)
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
    if summed is not None:  # a bug or a choice: the step probe's clipping measure decides
        judge_sum(f, summed, p)
    return f.result(checked)
