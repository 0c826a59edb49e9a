"""The contract check's target probes: the training targets against the task (dtype, range,
values), the output's shape against the targets as the loss receives them, and, for a
language model's tuple batches, targets that are the next tokens."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from trackcheck.checks.contract._contract_findings import Findings, Thresholds
from trackcheck.context import Context
from trackcheck.pipeline import Batch, primary
from trackcheck.tasks import Task


def check_targets(ctx: Context, y: Tensor, f: Findings) -> bool:
    """The whole training split's targets against the task: dtype, range, values."""
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        bad = int((~torch.isfinite(y)).sum())
        f.fail(f"{bad} training targets are NaN or Inf: clean them in the dataset")
        return False
    if ctx.task.name in ("multiclass", "lm", "token"):
        return _class_targets(ctx, y, f)
    if ctx.task.name == "binary":
        return _binary_targets(y, f)
    return True


def _class_targets(ctx: Context, y: Tensor, f: Findings) -> bool:
    """Class ids: integers in 0..C-1, or ignore_index."""
    task, ign = ctx.task, ctx.pipeline.ignore_index
    C = task.num_classes  # type: ignore[attr-defined]
    f.metrics["num_outputs"] = float(C)
    if task.name == "multiclass" and y.is_floating_point() and y.dim() == 2 and y.shape[1] == C:
        msg = (
            f"the targets are [N, {C}] (one-hot or soft labels), but trackcheck's multiclass "
            "task reads class ids [N] (its loss, accuracy and priors): give class ids "
            "(y.argmax(-1)) in the dataset"
        )
        (f.warn if callable(ctx.pipeline.loss) else f.fail)(msg)
        return callable(ctx.pipeline.loss)
    v = y[y != ign]
    if v.numel() == 0:
        f.fail(f"every training target is ignore_index ({ign}): there is nothing to learn")
        return False
    if v.is_floating_point():
        frac = v[v != v.round()]
        if frac.numel():
            f.fail(
                f"the class ids are floats with fractional parts (e.g. {float(frac[0]):.4g}, "
                f"{frac.numel()} of {v.numel()} targets): the loss's .long() truncates them "
                "silently. Store class ids as integers (torch.long) in the dataset"
            )
            return False
        f.warn(
            "the class ids are stored as floats (integral values): the task's loss casts them "
            "with .long(), nn.CrossEntropyLoss rejects float class ids; store them as "
            "torch.long in the dataset"
        )
    ids = v.long()
    lo, hi = int(ids.min()), int(ids.max())
    f.metrics.update(
        min_class_id=float(lo), max_class_id=float(hi), classes_seen=float(ids.unique().numel())
    )
    ok = True
    if lo < 0:
        f.fail(
            f"class ids go down to {lo}: ids below 0 other than ignore_index={ign} crash the "
            f"loss. Mark positions without a target with {ign} (pipeline.ignore_index), or "
            f"remap the labels to 0..{C - 1}"
        )
        ok = False
    if hi >= C:
        n_over = int((ids >= C).sum())
        if lo >= 1 and hi == C:
            fix = (
                f"The labels run 1..{C}, off by one: subtract 1 in the dataset so they "
                f"run 0..{C - 1}"
            )
        else:
            fix = (
                f"Set data.num_outputs={hi + 1} (and the model's output layer to match) or "
                f"remap the labels to 0..{C - 1}"
            )
        f.fail(
            f"class id {hi} >= data.num_outputs={C} ({n_over} targets): PyTorch would stop "
            f"at 'Target {hi} is out of bounds' (on CUDA a device-side assert). {fix}"
        )
        ok = False
    return ok


def _binary_targets(y: Tensor, f: Findings) -> bool:
    """Binary targets: 0 and 1 (soft targets in between are fine for BCE)."""
    v = y.double().reshape(-1)
    f.metrics.update(min_target=float(v.min()), max_target=float(v.max()))
    if bool(((v < 0) | (v > 1)).any()):
        vals = set(v.unique()[:16].tolist())
        fix = (
            "Map -1 to 0 (y = (y + 1) / 2)"
            if vals <= {-1.0, 1.0}
            else "Subtract 1"
            if vals <= {1.0, 2.0}
            else "Map them to 0 and 1"
        )
        f.fail(
            f"binary targets take values {sorted(vals)[:6]}, outside [0, 1]: BCE with a "
            f"target outside [0, 1] has no minimum (the logit runs off). {fix} in the dataset"
        )
        return False
    if bool(((v > 0) & (v < 1)).any()):
        f.note("Some binary targets lie strictly between 0 and 1 (soft labels): fine for BCE.")
    return True


def check_shapes(ctx: Context, out: Tensor, y: Tensor, f: Findings) -> bool:
    """The output's shape against the task and the targets, as the loss receives them."""
    os_, ys = list(out.shape), list(y.shape)
    f.metrics["output_dim"] = float(os_[-1]) if len(os_) > 1 else 1.0  # per example
    if not os_ or os_[0] != ys[0]:
        f.fail(
            f"the model returned {os_} for a batch of {ys[0]} examples: the first "
            "dimension of the output must be the batch"
        )
        return False
    user = callable(ctx.pipeline.loss)
    if ctx.task.name in ("multiclass", "lm", "token"):
        problem = _class_shape(ctx.task, os_, ys, y)
    elif ctx.task.name == "binary":
        problem = _binary_shape(os_, ys, user)
    else:
        problem = None if os_ == ys or (not user and os_ == ys + [1]) else _shape_msg(os_, ys)
    if problem and user and ctx.task.name in ("binary", "regression") and os_ != ys:
        if _loss_pairs_rows(ctx, out, y):  # the shapes the loss itself receives fit
            f.note(
                f"The output is {os_} and the targets {ys}; your loss pairs each output "
                "with its own target (its gradient for one example does not move when the "
                "others' targets change), so it reshapes them itself: fine."
            )
            return True
    if problem:
        f.fail(problem)
    return problem is None


def _loss_pairs_rows(ctx: Context, out: Tensor, y: Tensor) -> bool:
    """Whether the user's loss pairs output row i with target i, whatever the raw shapes:
    the judgment is on what the loss receives after its own squeeze or view. Row 0's
    gradient is computed twice, with every OTHER target changed the second time: a loss
    that pairs rows leaves it as it was (up to float rounding; a mean's 1/B is unchanged),
    one that broadcasts [B, 1] against [B] mixes every target into every row's gradient
    (MSE: d/d out_0 = 2/B^2 sum_j (out_0 - y_j)) and moves it. A loss that raises on the
    shapes does not pair them."""
    if len(y) < 2 or not y.is_floating_point():
        return False
    other = y.clone()
    if ctx.task.name == "binary":
        other[1:] = 1 - other[1:]
    else:
        other[1:] = other[1:] + (float(y.std()) or 1.0) * 3
    grads = []
    try:
        for t in (y, other):
            o = out.detach().clone().requires_grad_(True)
            grads.append(torch.autograd.grad(ctx.loss(o, t), o)[0][0])
    except (RuntimeError, ValueError, TypeError, IndexError):
        return False
    a, b = grads
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(a.abs().max() + 1e-12)))


def _class_shape(task: Task, os_: list[int], ys: list[int], y: Tensor) -> str | None:
    C = task.num_classes  # type: ignore[attr-defined]
    if task.per_position:
        if len(os_) != 3 or os_[:2] != ys or os_[2] != C:
            what = "language model" if task.autoregressive else "per-token classifier"
            size = "the vocabulary size" if task.autoregressive else "the number of tags"
            return (
                f"the {what} outputs {os_} for targets {ys}: it should give "
                f"[batch, time, {C}] logits aligned with [batch, time] targets "
                f"(data.num_outputs={C}, {size})"
            )
        return None
    if len(os_) != 2 or os_[1] != C:
        return (
            f"the model outputs {os_} for a multiclass task with data.num_outputs={C}: it "
            f"should give [batch, {C}] logits. Make the final layer's out_features {C}, "
            f"or set data.num_outputs={os_[-1]} if that is the number of classes"
        )
    if len(ys) != 1 and not (y.is_floating_point() and ys == os_):
        return f"multiclass targets should be [batch] class ids, got {ys}: y.view(-1) them"
    return None


def _binary_shape(os_: list[int], ys: list[int], user: bool) -> str | None:
    if not (len(os_) == 1 or (len(os_) == 2 and os_[1] == 1)):
        return (
            f"the model outputs {os_} for a binary task, which reads one logit per "
            f"example ([batch] or [batch, 1]): for {os_[-1]} logits per example use "
            f"data.task=multiclass with data.num_outputs={os_[-1]}"
        )
    if user and os_ != ys:
        return _shape_msg(os_, ys)
    if not user and len(ys) != 1:
        return f"binary targets should be [batch] in {{0, 1}}, got {ys}: y.view(-1) them"
    return None


def _shape_msg(os_: list[int], ys: list[int]) -> str:
    try:
        bs = list(torch.broadcast_shapes(torch.Size(os_), torch.Size(ys)))
    except RuntimeError:
        bs = None
    how = (
        f"broadcast silently to {bs} in an element-wise loss (MSELoss averages all "
        f"{math.prod(bs)} pairs instead of {ys[0]} predictions)"
        if bs
        else "do not match"
    )
    return (
        f"output {os_} and targets {ys} {how}: give them the same shape, e.g. "
        "out.squeeze(-1) in the model or y.view(-1) / y.unsqueeze(-1) in the dataset"
    )


def check_shift(ctx: Context, batch: Batch, f: Findings, p: Thresholds) -> None:
    """LM tuple batches hold the next tokens: y[:, t] == x[:, t + 1]. Dict batches are
    shifted by the pipeline (the Hugging Face convention), so they are not judged."""
    if isinstance(batch.raw, Mapping):
        return
    x, y = primary(batch.x), batch.y
    if x.shape != y.shape or x.dim() != 2 or x.shape[1] < 2:
        return
    valid = y != ctx.pipeline.ignore_index
    nxt = float((y[:, :-1] == x[:, 1:])[valid[:, :-1]].float().mean())
    same = float((y == x)[valid].float().mean())
    prev = float((y[:, 1:] == x[:, :-1])[valid[:, 1:]].float().mean())
    f.metrics.update(lm_target_is_next=nxt, lm_target_is_input=same)
    if nxt > p.shift_share:
        return
    fix = (
        "tuple batches for task lm hold the next tokens: x = ids[i : i + T], "
        "y = ids[i + 1 : i + T + 1]"
    )
    if same > p.shift_share:
        msg = (
            f"the LM targets equal the inputs on {same:.0%} of positions (the next token on "
            f"{nxt:.0%}): the model learns to copy its input. {fix}"
        )
        if callable(ctx.pipeline.loss):
            f.warn(msg + " (ignore this if your loss shifts them itself)")
        else:
            f.fail(msg)
    elif prev > p.shift_share:
        f.fail(
            f"the LM targets are the previous tokens on {prev:.0%} of positions: shifted the "
            f"wrong way. {fix}"
        )
    else:
        f.warn(
            f"the LM targets are the next input token on only {nxt:.0%} of positions (the "
            f"input itself on {same:.0%}): {fix}"
        )
