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
"""

from __future__ import annotations

import copy
import functools
import math
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import default_collate

from trackcheck.checks._fingerprint import fingerprint, row_fingerprints
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import TARGET_KEYS, Batch, primary, slice_inputs
from trackcheck.registry import register
from trackcheck.tasks import Task

SEED_OFFSET = 311  # the training batches this check reads: a stream of its own


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


@dataclass
class _Findings:
    """Values measured and problems found, in the order found; judged once at the end."""

    metrics: dict[str, float] = field(default_factory=dict)
    problems: list[tuple[Status, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.problems.append((Status.FAIL, msg))

    def warn(self, msg: str) -> None:
        self.problems.append((Status.WARN, msg))

    def note(self, msg: str) -> None:
        self.notes.append(msg)

    def result(self, checked: list[str]) -> CheckResult:
        fails = [m for s, m in self.problems if s is Status.FAIL]
        warns = [m for s, m in self.problems if s is Status.WARN]
        status = Status.FAIL if fails else Status.WARN if warns else Status.PASS
        items = fails + warns
        if items:
            word = "broken" if fails else "suspicious"
            listed = " ".join(f"({i}) {_sentence(m)}" for i, m in enumerate(items, 1))
            msg = f"contract {word}, {len(items)} problem{'s' * (len(items) > 1)}: {listed}"
        else:
            msg = f"contract holds: {', '.join(checked)} checked"
        if self.notes:
            msg += " Notes: " + " ".join(self.notes)
        rows = [[s.value, m] for s, m in self.problems] + [["note", n] for n in self.notes]
        return CheckResult(
            "contract",
            status,
            msg,
            metrics=self.metrics,
            tables={"findings": {"columns": ["status", "finding"], "rows": rows}},
            value=float(len(fails)),
            threshold="0 broken",
        )


def _sentence(msg: str) -> str:
    return msg if msg.endswith((".", "?", "!")) else msg + "."


@register("contract", ContractParams, fast=True, order=0, precondition=True)
def contract(ctx: Context, p: ContractParams) -> CheckResult:
    """Targets, output, loss, optimizer, batches and step fit together (one forward pass)."""
    f = _Findings()
    model = ctx.new_model()
    model.train()  # the mode the first training step sees
    batch = ctx.head("train", max(p.n_examples, 2))
    out = ctx.forward(model, batch.x)  # with grad: its graph shows stray leaves, the final op
    trainable = _check_parameters(ctx, model, out, f)
    final_op = _final_op(out)
    out = out.detach()
    targets_ok = _check_targets(ctx, ctx.targets("train"), f)
    shapes_ok = _check_shapes(ctx, out, batch.y, f)
    checked = ["targets", "output shape", "parameters", "batch content"]
    if ctx.task.name == "lm":
        _check_shift(ctx, batch, f, p)
    if ctx.task.classification and shapes_ok:
        _check_output_kind(ctx, out, final_op, f, p)
        checked.append("output kind")
    if targets_ok and shapes_ok:
        _check_loss(ctx, model, batch, out, f, p)
        checked.append("loss reduction")
    else:
        f.note("The loss (and a training step) are not evaluated until the targets and the "
               "output shape fit.")
    _check_batches(ctx, f, p)
    if ctx.pipeline.step is not None and trainable and targets_ok and shapes_ok:
        _check_step(ctx, f, p)
        checked.append("training step")
    return f.result(checked)


# --- parameters ---------------------------------------------------------------------------
def _check_parameters(ctx: Context, model: nn.Module, out: Tensor, f: _Findings) -> int:
    """At least one trainable parameter, all of them in the optimizer, and no tensor that
    requires grad feeding the output without being a parameter. Returns the count."""
    named = list(model.named_parameters())
    trainable = [(n, q) for n, q in named if q.requires_grad]
    frozen = [(n, q) for n, q in named if not q.requires_grad]
    f.metrics["trainable_params"] = float(sum(q.numel() for _, q in trainable))
    f.metrics["frozen_params"] = float(sum(q.numel() for _, q in frozen))
    if not trainable:
        f.fail(
            f"no parameter requires grad (all {len(named)} parameter tensors are frozen): "
            "training would stop at PyTorch's 'element 0 of tensors does not require grad'. "
            "Unfreeze what should learn (param.requires_grad_(True), at least the head)"
        )
        return 0
    if frozen:
        f.note(
            f"{len(frozen)} parameter tensors ({int(f.metrics['frozen_params'])} values) are "
            f"frozen, e.g. {_names([n for n, _ in frozen])}: fine for a frozen backbone."
        )
    opt = ctx.optimizer(model)
    in_opt = {id(q) for g in opt.param_groups for q in g["params"]}
    missing = [n for n, q in trainable if id(q) not in in_opt]
    f.metrics["params_not_in_optimizer"] = float(len(missing))
    if missing:
        f.fail(
            f"{len(missing)} of {len(trainable)} trainable parameter tensors are in none of "
            f"the optimizer's param groups: {_names(missing)}; they never change. Build the "
            "optimizer over model.parameters() (the optimizer factory gets them) or add "
            "them to a param group"
        )
    registered = {id(q) for _, q in named}
    stray = [t for t in _graph_leaves(out) if id(t) not in registered]
    f.metrics["unregistered_tensors"] = float(len(stray))
    if stray:
        shapes = ", ".join(str(list(t.shape)) for t in stray[:4])
        f.fail(
            f"{len(stray)} tensors that require grad feed the output but are not parameters "
            f"of the model ({shapes}): model.parameters(), the optimizer, .to(device) and "
            "state_dict() miss them. Hold layers in nn.ModuleList / nn.ModuleDict (not a "
            "Python list or dict) and learnable tensors in nn.Parameter"
        )
    return len(trainable)


def _names(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")


def _graph_leaves(out: Tensor) -> list[Tensor]:
    """The leaf tensors (requiring grad) the autograd graph of ``out`` accumulates into."""
    leaves: list[Tensor] = []
    seen: set[int] = set()
    stack = [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)  # AccumulateGrad nodes hold their leaf
        if isinstance(var, Tensor):
            leaves.append(var)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return leaves


_SHAPE_OPS = ("View", "Reshape", "UnsafeView", "Squeeze", "Unsqueeze", "Transpose",
              "Permute", "Clone", "Select", "Slice", "Expand", "ToCopy", "Alias")


def _final_op(out: Tensor) -> str:
    """The last op that computed ``out``, looking through reshapes ('Softmax', 'Sigmoid',
    'Addmm', ...); '' without a graph (a frozen model)."""
    fn = out.grad_fn
    while fn is not None:
        name = re.sub(r"Backward\d*$", "", type(fn).__name__)
        if not name.startswith(_SHAPE_OPS):
            return name
        fn = next((nxt for nxt, _ in fn.next_functions if nxt is not None), None)
    return ""


# --- targets and shapes ---------------------------------------------------------------------
def _check_targets(ctx: Context, y: Tensor, f: _Findings) -> bool:
    """The whole training split's targets against the task: dtype, range, values."""
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        bad = int((~torch.isfinite(y)).sum())
        f.fail(f"{bad} training targets are NaN or Inf: clean them in the dataset")
        return False
    if ctx.task.name in ("multiclass", "lm"):
        return _class_targets(ctx, y, f)
    if ctx.task.name == "binary":
        return _binary_targets(y, f)
    return True


def _class_targets(ctx: Context, y: Tensor, f: _Findings) -> bool:
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
    f.metrics.update(min_class_id=float(lo), max_class_id=float(hi),
                     classes_seen=float(ids.unique().numel()))
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
            fix = (f"The labels run 1..{C}, off by one: subtract 1 in the dataset so they "
                   f"run 0..{C - 1}")
        else:
            fix = (f"Set data.num_outputs={hi + 1} (and the model's output layer to match) or "
                   f"remap the labels to 0..{C - 1}")
        f.fail(
            f"class id {hi} >= data.num_outputs={C} ({n_over} targets): PyTorch would stop "
            f"at 'Target {hi} is out of bounds' (on CUDA a device-side assert). {fix}"
        )
        ok = False
    return ok


def _binary_targets(y: Tensor, f: _Findings) -> bool:
    """Binary targets: 0 and 1 (soft targets in between are fine for BCE)."""
    v = y.double().reshape(-1)
    f.metrics.update(min_target=float(v.min()), max_target=float(v.max()))
    if bool(((v < 0) | (v > 1)).any()):
        vals = set(v.unique()[:16].tolist())
        fix = ("Map -1 to 0 (y = (y + 1) / 2)" if vals <= {-1.0, 1.0}
               else "Subtract 1" if vals <= {1.0, 2.0} else "Map them to 0 and 1")
        f.fail(
            f"binary targets take values {sorted(vals)[:6]}, outside [0, 1]: BCE with a "
            f"target outside [0, 1] has no minimum (the logit runs off). {fix} in the dataset"
        )
        return False
    if bool(((v > 0) & (v < 1)).any()):
        f.note("Some binary targets lie strictly between 0 and 1 (soft labels): fine for BCE.")
    return True


def _check_shapes(ctx: Context, out: Tensor, y: Tensor, f: _Findings) -> bool:
    """The output's shape against the task and the targets, as the loss receives them."""
    os_, ys = list(out.shape), list(y.shape)
    f.metrics["output_dim"] = float(os_[-1]) if len(os_) > 1 else 1.0  # per example
    if not os_ or os_[0] != ys[0]:
        f.fail(f"the model returned {os_} for a batch of {ys[0]} examples: the first "
               "dimension of the output must be the batch")
        return False
    user = callable(ctx.pipeline.loss)
    if ctx.task.name in ("multiclass", "lm"):
        problem = _class_shape(ctx.task, os_, ys, y)
    elif ctx.task.name == "binary":
        problem = _binary_shape(os_, ys, user)
    else:
        problem = None if os_ == ys or (not user and os_ == ys + [1]) else _shape_msg(os_, ys)
    if problem:
        f.fail(problem)
    return problem is None


def _class_shape(task: Task, os_: list[int], ys: list[int], y: Tensor) -> str | None:
    C = task.num_classes  # type: ignore[attr-defined]
    if task.name == "lm":
        if len(os_) != 3 or os_[:2] != ys or os_[2] != C:
            return (f"the language model outputs {os_} for targets {ys}: it should give "
                    f"[batch, time, {C}] logits aligned with [batch, time] targets "
                    f"(data.num_outputs={C}, the vocabulary size)")
        return None
    if len(os_) != 2 or os_[1] != C:
        return (f"the model outputs {os_} for a multiclass task with data.num_outputs={C}: it "
                f"should give [batch, {C}] logits. Make the final layer's out_features {C}, "
                f"or set data.num_outputs={os_[-1]} if that is the number of classes")
    if len(ys) != 1 and not (y.is_floating_point() and ys == os_):
        return f"multiclass targets should be [batch] class ids, got {ys}: y.view(-1) them"
    return None


def _binary_shape(os_: list[int], ys: list[int], user: bool) -> str | None:
    if not (len(os_) == 1 or (len(os_) == 2 and os_[1] == 1)):
        return (f"the model outputs {os_} for a binary task, which reads one logit per "
                f"example ([batch] or [batch, 1]): for {os_[-1]} logits per example use "
                f"data.task=multiclass with data.num_outputs={os_[-1]}")
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
    how = (f"broadcast silently to {bs} in an element-wise loss (MSELoss averages all "
           f"{math.prod(bs)} pairs instead of {ys[0]} predictions)" if bs else "do not match")
    return (f"output {os_} and targets {ys} {how}: give them the same shape, e.g. "
            "out.squeeze(-1) in the model or y.view(-1) / y.unsqueeze(-1) in the dataset")


def _check_shift(ctx: Context, batch: Batch, f: _Findings, p: ContractParams) -> None:
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
    fix = ("tuple batches for task lm hold the next tokens: x = ids[i : i + T], "
           "y = ids[i + 1 : i + T + 1]")
    if same > p.shift_share:
        msg = (f"the LM targets equal the inputs on {same:.0%} of positions (the next token on "
               f"{nxt:.0%}): the model learns to copy its input. {fix}")
        if callable(ctx.pipeline.loss):
            f.warn(msg + " (ignore this if your loss shifts them itself)")
        else:
            f.fail(msg)
    elif prev > p.shift_share:
        f.fail(f"the LM targets are the previous tokens on {prev:.0%} of positions: shifted the "
               f"wrong way. {fix}")
    else:
        f.warn(f"the LM targets are the next input token on only {nxt:.0%} of positions (the "
               f"input itself on {same:.0%}): {fix}")


# --- output kind ----------------------------------------------------------------------------
def _output_kind(out: Tensor, final_op: str, binary: bool, atol: float) -> str:
    """'probabilities', 'log-probabilities' or 'logits', from the values (and, for a single
    binary output, whose values alone cannot tell, the op that produced them)."""
    o = out.float()
    in01 = bool(((o >= -atol) & (o <= 1 + atol)).all())
    if binary:
        return "probabilities" if in01 and final_op in ("Sigmoid", "Softmax") else "logits"
    rows = o.reshape(-1, o.shape[-1])  # [B * T, C]
    if in01 and bool(((rows.sum(-1) - 1).abs() <= atol).all()):
        return "probabilities"
    if bool((rows <= atol).all()) and bool((rows.logsumexp(-1).abs() <= atol).all()):
        return "log-probabilities"
    return "logits"


_EXPECTS: list[tuple[Any, str]] = [
    ((nn.CrossEntropyLoss, nn.BCEWithLogitsLoss, F.cross_entropy,
      F.binary_cross_entropy_with_logits), "logits"),
    ((nn.NLLLoss, F.nll_loss), "log-probabilities"),
    ((nn.BCELoss, F.binary_cross_entropy), "probabilities"),
]


def _loss_expects(ctx: Context) -> tuple[str | None, str]:
    """(the output kind the loss expects, or None when unknown; the loss's name)."""
    fn = ctx.pipeline.loss
    if fn is None:
        name = "BCEWithLogitsLoss" if ctx.task.name == "binary" else "CrossEntropyLoss"
        return "logits", f"the task's loss ({name})"
    if not callable(fn):
        return None, "the model's own loss"
    base = fn.func if isinstance(fn, functools.partial) else fn
    name = type(base).__name__ if isinstance(base, nn.Module) else getattr(base, "__name__", "")
    for kinds, kind in _EXPECTS:
        if any(base is k or (isinstance(k, type) and isinstance(base, k)) for k in kinds):
            return kind, name
    return None, name or "your loss"


def _check_output_kind(
    ctx: Context, out: Tensor, final_op: str, f: _Findings, p: ContractParams
) -> None:
    binary = ctx.task.name == "binary"
    kind = _output_kind(out, final_op, binary, p.prob_atol)
    want, name = _loss_expects(ctx)
    f.metrics["output_is_probabilities"] = float(kind == "probabilities")
    f.metrics["output_is_log_probabilities"] = float(kind == "log-probabilities")
    if kind == (want or "logits"):
        if want == "probabilities":  # sigmoid + BCELoss: consistent, but not logits
            f.warn(f"the model ends in a sigmoid for {name}: trackcheck reads binary outputs "
                   "as logits (accuracy at 0, the init-bias prior), so those numbers are off. "
                   "Drop the sigmoid and use BCEWithLogitsLoss (numerically safer too)")
        return
    seen = ("every value in [0, 1], made by a sigmoid" if binary
            else "rows in [0, 1] summing to 1")
    if kind == "probabilities" and want == "logits":
        last, inner = ("sigmoid", "sigmoid") if binary else ("softmax", "log_softmax")
        f.fail(f"the model outputs probabilities ({seen}) but {name} expects logits and "
               f"applies {inner} itself: the loss cannot approach 0 and its gradients "
               f"shrink. Drop the final {last} from the model")
    elif kind == "log-probabilities" and want in ("logits", None):
        f.note(f"The model outputs log-probabilities (logsumexp of each row is 0); {name} "
               "re-normalises them, so this trains as logits would.")
    elif want == "log-probabilities":
        fix = ("use log_softmax instead of softmax" if kind == "probabilities" else
               "end the model in log_softmax, or use CrossEntropyLoss on the logits (NLLLoss "
               "of raw logits has no minimum)")
        f.fail(f"{name} expects log-probabilities but the model outputs {kind}: {fix}")
    elif want == "probabilities":
        f.fail(f"{name} expects probabilities but the model outputs logits: use "
               "BCEWithLogitsLoss on the logits (or end the model in a sigmoid)")
    else:  # probabilities, and a loss of unknown kind
        f.warn(f"the model outputs probabilities ({seen}), and trackcheck reads "
               f"{ctx.task.name} outputs as logits (softmax/sigmoid, the init-bias prior): if "
               f"{name} expects logits, drop the final softmax/sigmoid")


# --- the loss -------------------------------------------------------------------------------
@torch.no_grad()
def _loss_on(ctx: Context, model: nn.Module, batch: Batch, out: Tensor, rows: slice) -> Tensor:
    """The scalar loss of the examples ``rows``: the configured loss on that slice of the
    output, or the model's own loss from an eval-mode forward of those rows (eval: no
    dropout noise between the slices compared)."""
    if not ctx.pipeline.model_loss:
        return ctx.loss(out[rows], batch.y[rows])
    model.eval()
    try:
        sub = Batch(slice_inputs(batch.x, rows), batch.y[rows], None)
        return ctx.batch_loss(model, sub)[0]
    finally:
        model.train()


def _check_loss(
    ctx: Context, model: nn.Module, batch: Batch, out: Tensor, f: _Findings, p: ContractParams
) -> None:
    """A finite scalar, and a per-example mean: the batch's loss lies between its halves'."""
    n, h = len(batch), len(batch) // 2
    try:
        full = float(_loss_on(ctx, model, batch, out, slice(0, max(2 * h, 1))))
        if h == 0:  # a one-example dataset: no halves to compare
            a = b = float("nan")
        else:
            a = float(_loss_on(ctx, model, batch, out, slice(0, h)))
            b = float(_loss_on(ctx, model, batch, out, slice(h, 2 * h)))
    except (ValueError, RuntimeError, IndexError, TypeError) as e:
        f.fail(f"the loss failed on the first {n} training examples: {type(e).__name__}: "
               f"{str(e).splitlines()[0] if str(e) else ''}")
        return
    f.metrics["loss"] = full
    if not math.isfinite(full):
        f.fail(f"the loss on the first {2 * h} training examples is {full} at init: look for "
               "a log of 0 (probabilities into a log loss) or NaN inputs")
        return
    pe = _per_example_mean(ctx, out[: 2 * h], batch.y[: 2 * h])
    mean_half = (a + b) / 2
    k = math.log2(full / mean_half) if full > 0 and mean_half > 0 else float("nan")
    f.metrics.update(loss_batch_ratio=full / pe if pe else float("nan"),
                     loss_half_ratio=full / mean_half if mean_half else float("nan"),
                     loss_scaling_exponent=k)
    tol = p.mean_rtol * max(abs(a), abs(b), abs(full), 1e-12)
    if not (math.isfinite(a) and math.isfinite(b)) or min(a, b) - tol <= full <= max(a, b) + tol:
        return
    if k >= p.max_scaling_exponent:
        ratio = f.metrics["loss_batch_ratio"]
        per_example = f"; {ratio:.3g}x the mean per-example loss" if math.isfinite(ratio) else ""
        f.fail(f"the loss grows with the batch: {full:.4g} on {2 * h} examples, {a:.4g} and "
               f"{b:.4g} on its halves (a mean lies between them, a sum is their total, "
               f"{a + b:.4g}){per_example}. Reduce with a mean (reduction='mean', or divide "
               "by the batch size): a summed loss scales the gradients, so the learning rate, "
               "with the batch size")
    else:
        f.warn(f"the batch's loss ({full:.4g} on {2 * h} examples) is not a mean of its "
               f"examples' losses: its halves give {a:.4g} and {b:.4g}, and a mean lies between "
               "them. It depends on which examples share the batch (in-batch negatives, batch "
               "statistics?); the checks that compare per-example losses assume a mean")


def _per_example_mean(ctx: Context, out: Tensor, y: Tensor) -> float:
    try:
        with torch.no_grad():
            return float(ctx.per_example_loss(out, y).mean())
    except (ValueError, RuntimeError, TypeError):  # a loss vmap cannot split: ratio unknown
        return float("nan")


# --- batch content --------------------------------------------------------------------------
def _check_batches(ctx: Context, f: _Findings, p: ContractParams) -> None:
    """A training batch from the real loader: data.batch_size rows, distinct examples."""
    b = next(ctx.train_batches(seed_offset=SEED_OFFSET))
    n = len(b)
    rows = int(primary(b.x).shape[0])
    f.metrics["train_batch_size"] = float(n)
    if rows != n:
        f.fail(f"a training batch has {rows} input rows and {n} targets: the collate_fn "
               "misaligns inputs and targets")
    _check_batch_size(ctx, n, f)
    _check_duplicates(ctx, b, f, p)


def _check_batch_size(ctx: Context, n: int, f: _Findings) -> None:
    """The first batch has data.batch_size rows (the dataset has that many items): fail when
    the collate returns fewer or more rows each of which is an item unchanged (it lost or
    repeated items); warn when its rows are not items (packing or splitting on purpose?)."""
    want, size = ctx.data.batch_size, _len(ctx.data.train)
    if size is None or size < want or n == want:
        return
    msg = f"the first training batch holds {n} examples, data.batch_size is {want}: "
    intact = None if ctx.data.train_loader_fn is not None else _rows_are_items(ctx, want)
    if intact is False:
        f.warn(msg + f"the collate_fn makes {n} rows of {want} items, none of them an item as "
               "given: if it packs or splits examples on purpose, trackcheck's checks see its "
               "rows as the examples")
        return
    msg += (f"the collate_fn {'drops' if n < want else 'repeats'} items (it must return one row "
            "per item it is given)")
    if intact:
        f.fail(msg)
    else:
        f.warn(msg + ", or the train loader ignores its batch_size argument")


def _rows_are_items(ctx: Context, k: int) -> bool | None:
    """Whether every row the collate makes of the first ``k`` training items is one of them
    unchanged (collated alone); None when the items cannot be read by index."""
    collate = ctx.data.collate_fn or default_collate

    def alone(item: Any) -> str:  # a collate that drops items returns nothing for one item
        try:
            rows = row_fingerprints(collate([item]))
        except (IndexError, ValueError, RuntimeError):
            rows = []
        return rows[0] if len(rows) == 1 else row_fingerprints(default_collate([item]))[0]

    try:
        items = [ctx.data.train[i] for i in range(k)]
        singles = {alone(item) for item in items}
        return all(r in singles for r in row_fingerprints(collate(items)))
    except (TypeError, NotImplementedError, KeyError, IndexError, ValueError, RuntimeError):
        return None


def _check_duplicates(ctx: Context, b: Batch, f: _Findings, p: ContractParams) -> None:
    """One example filling most of a batch, or far more repeated rows than the data has."""
    n = len(b)
    counts = Counter(row_fingerprints(_cpu(b.x)))
    top, dup = max(counts.values()), n - len(counts)
    base = _dataset_duplicates(ctx, p.dataset_items)
    base_dup, base_top = base if base is not None else (0.0, 0.0)
    f.metrics.update(duplicate_examples=float(dup), max_repeats=float(top),
                     dataset_duplicate_share=base_dup if base is not None else float("nan"))
    data = (f"the dataset's first {p.dataset_items} items by index repeat {base_dup:.0%}"
            if base is not None else "the dataset cannot be read by index")
    if n >= 4 and top > p.max_repeat_share * n and base_top <= p.max_repeat_share:
        f.fail(f"one example fills {top} of the {n} rows of a training batch ({data}): a "
               "collate_fn that repeats one item, or a sampler that yields one index")
    elif n >= 4 and dup / n > base_dup + p.excess_duplicates:
        f.warn(f"{dup} of the {n} rows of a training batch repeat another row ({data}): the "
               "collate_fn or sampler repeats examples (a sampler with replacement or "
               "oversampling does this on purpose)")


def _len(ds: Any) -> int | None:
    try:
        return len(ds)
    except TypeError:  # an IterableDataset without __len__
        return None


def _cpu(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach().cpu()
    if isinstance(x, Mapping):
        return {k: _cpu(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(_cpu(v) for v in x)
    return x


def _dataset_duplicates(ctx: Context, m: int) -> tuple[float, float] | None:
    """(share of repeated items, share of the most common one) among the first ``m``
    training items by index, inputs only; None when the dataset cannot be indexed."""
    ds = ctx.data.train
    try:
        n = min(len(ds), m)  # type: ignore[arg-type]
        fps = [fingerprint(_item_inputs(ctx, ds[i])) for i in range(n)]
    except (TypeError, NotImplementedError, KeyError, IndexError, AttributeError):
        return None
    if not fps:
        return None
    counts = Counter(fps)
    return 1 - len(counts) / n, max(counts.values()) / n


def _item_inputs(ctx: Context, item: Any) -> Any:
    """A dataset item without its target (as the pipeline splits a batch)."""
    if isinstance(item, Mapping):
        key = ctx.pipeline.target_key or next((k for k in TARGET_KEYS if k in item), None)
        return {k: v for k, v in item.items() if k != key}
    if isinstance(item, tuple | list) and len(item) >= 2:
        return list(item[:-1])
    return item


# --- the user's training step ---------------------------------------------------------------
def _check_step(ctx: Context, f: _Findings, p: ContractParams) -> None:
    """Two calls on two batches: a finite loss each, the second leaves that batch's gradient
    only (compared with the same call on a copy whose .grad was cleared), train mode."""
    model = ctx.new_model()
    model.train()
    opt = ctx.optimizer(model)
    batches = ctx.train_batches(seed_offset=SEED_OFFSET + 1)
    b1, b2 = next(batches), next(batches)
    modes: list[bool] = []  # module.training at each forward the step runs
    model.register_forward_pre_hook(lambda m, _args: modes.append(m.training))
    before = [q.detach().clone() for q in model.parameters()]
    if _run_step(ctx, model, b1, opt, f, "first") is None:
        return
    moved_first = _moved(model, before)
    g_prev = _grads(model)
    fresh = copy.deepcopy(model)  # the hook comes along: its forwards are recorded too
    for q in fresh.parameters():
        q.grad = None
    state = _rng_state(ctx)  # both second calls draw the same dropout masks
    if _run_step(ctx, fresh, b2, ctx.optimizer(fresh), f, "second") is None:
        return
    _set_rng_state(ctx, state)
    if _run_step(ctx, model, b2, opt, f, "second") is None:
        return
    _judge_grads(f, p, g_prev, _grads(fresh), _grads(model), moved_first)
    if not _moved(model, before):
        f.warn("two calls of the training step left every parameter unchanged: does it call "
               "optimizer.step()?")
    _judge_modes(f, model, modes)


def _run_step(
    ctx: Context, model: nn.Module, b: Batch, opt: torch.optim.Optimizer, f: _Findings,
    which: str,
) -> float | None:
    try:  # the step gets its own copy of the batch: steps that pop keys or edit in place
        v = ctx.train_step(model, Batch(b.x, b.y, _clone(b.raw)), opt)
    except Exception as e:  # noqa: BLE001 - the user's code: its failure is the finding
        if isinstance(e, TypeError) and "NoneType" in str(e):
            f.fail(f"the training step (pipeline.step) returned None on its {which} call: "
                   "return the batch's loss")
        else:
            f.fail(f"the training step (pipeline.step) raised on its {which} call: "
                   f"{type(e).__name__}: {e}")
        return None
    if not math.isfinite(v):
        f.fail(f"the training step returned {v} on its {which} call: a finite loss expected")
        return None
    return v


def _clone(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.clone()
    if isinstance(x, Mapping):
        return {k: _clone(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(_clone(v) for v in x)
    return x


def _grads(model: nn.Module) -> list[Tensor]:
    return [q.grad.detach().clone() if q.grad is not None else torch.zeros_like(q)
            for q in model.parameters()]


def _moved(model: nn.Module, before: list[Tensor]) -> bool:
    return any(not torch.equal(q.detach(), b) for q, b in zip(model.parameters(), before,
                                                                 strict=True))


def _norm(ts: list[Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in ts))


def _judge_grads(
    f: _Findings, p: ContractParams, g_prev: list[Tensor], g_clean: list[Tensor],
    g_cont: list[Tensor], moved_first: bool,
) -> None:
    """.grad after the second call against the same call on a cleared copy."""
    n_clean, n_prev = _norm(g_clean), _norm(g_prev)
    if n_clean == 0 and _norm(g_cont) == 0:
        f.note("The training step leaves .grad empty (zero_grad after stepping): fine.")
        return
    diff = _norm([c - k for c, k in zip(g_cont, g_clean, strict=True)])
    rel = diff / max(n_clean, _norm(g_cont))  # relative to the larger: finite when one is 0
    acc = [c - k - q for c, k, q in zip(g_cont, g_clean, g_prev, strict=True)]
    rel_acc = _norm(acc) / max(n_prev, 1e-30) if n_prev > 0 else float("inf")
    f.metrics.update(step_grad_error=rel, step_grad_accumulation_error=rel_acc)
    if rel <= p.grad_rtol:
        return
    if rel_acc <= p.grad_rtol:
        msg = (f"after the training step's second call .grad holds the first batch's gradient "
               f"plus the second's (within {rel_acc:.2g}), not the second's alone (off by "
               f"{rel:.3g} of its norm): the step does not clear the gradients")
        if moved_first:
            f.fail(msg + ". Call optimizer.zero_grad() before loss.backward()")
        else:
            f.warn(msg + " and did not update the parameters on its first call: gradient "
                   "accumulation on purpose? trackcheck counts each call as one step")
    else:
        f.warn(f"the gradient the training step leaves depends on what ran before: "
               f"{diff:.3g} away from what the same call leaves on a copy with cleared .grad "
               f"({n_clean:.3g} there; state kept in the step: a counter, a gradient scaler?)")


def _judge_modes(f: _Findings, model: nn.Module, modes: list[bool]) -> None:
    if not modes:
        f.note("The training step never called the model (no forward pass was seen).")
        return
    evals = modes.count(False)
    f.metrics["step_forwards_in_eval"] = float(evals)
    if not evals:
        return
    dependent = [type(m).__name__ for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)]
    msg = (f"{evals} of the training step's {len(modes)} forward passes ran in eval mode: the "
           "step calls model.eval() (or leaves the model there)")
    if dependent:
        f.fail(msg + f", so its {dependent[0]} layers train as at inference (dropout off, "
               "BatchNorm on running statistics). Call model.train() at the start of the step")
    else:
        f.warn(msg + "; this model has no dropout or BatchNorm, so it makes no difference yet. "
               "Call model.train() at the start of the step")


def _rng_state(ctx: Context) -> tuple[Any, ...]:
    cuda = torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_rng_state(ctx: Context, state: tuple[Any, ...]) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])
    if state[3] is not None:
        torch.cuda.set_rng_state(state[3], ctx.device)
