"""The contract check's loss probes: the kind of output the model gives (logits,
probabilities, log-probabilities) against the kind its loss expects, and the loss's
reduction (a finite scalar, a per-example mean: the batch's loss lies between its halves')."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackcheck.checks.contract._contract_findings import Findings, Thresholds
from trackcheck.context import Context
from trackcheck.pipeline import Batch, slice_inputs


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
    (
        (
            nn.CrossEntropyLoss,
            nn.BCEWithLogitsLoss,
            F.cross_entropy,
            F.binary_cross_entropy_with_logits,
        ),
        "logits",
    ),
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


def check_output_kind(ctx: Context, out: Tensor, final_op: str, f: Findings, p: Thresholds) -> None:
    binary = ctx.task.name == "binary"
    kind = _output_kind(out, final_op, binary, p.prob_atol)
    want, name = _loss_expects(ctx)
    f.metrics["output_is_probabilities"] = float(kind == "probabilities")
    f.metrics["output_is_log_probabilities"] = float(kind == "log-probabilities")
    if kind == (want or "logits"):
        if want == "probabilities":  # sigmoid + BCELoss: consistent, but not logits
            f.warn(
                f"the model ends in a sigmoid for {name}: trackcheck reads binary outputs "
                "as logits (accuracy at 0, the init-bias prior), so those numbers are off. "
                "Drop the sigmoid and use BCEWithLogitsLoss (numerically safer too)"
            )
        return
    seen = "every value in [0, 1], made by a sigmoid" if binary else "rows in [0, 1] summing to 1"
    if kind == "probabilities" and want == "logits":
        last, inner = ("sigmoid", "sigmoid") if binary else ("softmax", "log_softmax")
        f.fail(
            f"the model outputs probabilities ({seen}) but {name} expects logits and "
            f"applies {inner} itself: the loss cannot approach 0 and its gradients "
            f"shrink. Drop the final {last} from the model"
        )
    elif kind == "log-probabilities" and want in ("logits", None):
        f.note(
            f"The model outputs log-probabilities (logsumexp of each row is 0); {name} "
            "re-normalises them, so this trains as logits would."
        )
    elif want == "log-probabilities":
        fix = (
            "use log_softmax instead of softmax"
            if kind == "probabilities"
            else "end the model in log_softmax, or use CrossEntropyLoss on the logits (NLLLoss "
            "of raw logits has no minimum)"
        )
        f.fail(f"{name} expects log-probabilities but the model outputs {kind}: {fix}")
    elif want == "probabilities":
        f.fail(
            f"{name} expects probabilities but the model outputs logits: use "
            "BCEWithLogitsLoss on the logits (or end the model in a sigmoid)"
        )
    else:  # probabilities, and a loss of unknown kind
        f.warn(
            f"the model outputs probabilities ({seen}), and trackcheck reads "
            f"{ctx.task.name} outputs as logits (softmax/sigmoid, the init-bias prior): if "
            f"{name} expects logits, drop the final softmax/sigmoid"
        )


@torch.no_grad()
def _loss_on(ctx: Context, model: nn.Module, batch: Batch, out: Tensor, rows: slice) -> Tensor:
    """The scalar loss of the examples ``rows``: the configured loss on that slice of the
    output, or the model's own loss from an eval-mode forward of those rows (eval: no
    dropout noise between the slices compared)."""
    if not ctx.pipeline.model_loss:
        return ctx.loss(ctx.pipeline.rows(out, rows), batch.y[rows])
    model.eval()
    try:
        sub = Batch(slice_inputs(batch.x, rows), batch.y[rows], None)
        return ctx.batch_loss(model, sub)[0]
    finally:
        model.train()


def _takes_whole_hint(ctx: Context, model: nn.Module, batch: Batch) -> str:
    """'': unless the user's loss, failing on the prediction, takes the model's whole output
    (a tuple or dict: a VAE's (recon, mu, logvar)) without an error: then how to say so."""
    fn = ctx.pipeline.loss
    if not callable(fn) or ctx.pipeline.loss_takes == "whole":
        return ""
    try:
        with torch.no_grad():
            raw = ctx.pipeline.call(model, batch.x)
            if isinstance(raw, Tensor) or not ctx.pipeline.batch_first:
                return ""
            v = fn(raw, batch.y)
    except Exception:  # noqa: BLE001 - the whole output does not fit it either: no hint
        return ""
    if not isinstance(v, Tensor) or v.numel() != 1:
        return ""
    return (
        f". It takes the model's whole output ({type(raw).__name__}) instead: set "
        "pipeline.loss_takes=whole"
    )


def check_loss(
    ctx: Context, model: nn.Module, batch: Batch, out: Tensor, f: Findings, p: Thresholds
) -> str | None:
    """A finite scalar, and a per-example mean: the batch's loss lies between its halves'.
    A loss that grows with the batch (a sum) is not recorded but returned: whether it is a
    bug depends on the training step (:func:`judge_sum`)."""
    n, h = len(batch), len(batch) // 2
    try:
        full = float(_loss_on(ctx, model, batch, out, slice(0, max(2 * h, 1))))
        if h == 0:  # a one-example dataset: no halves to compare
            a = b = float("nan")
        else:
            a = float(_loss_on(ctx, model, batch, out, slice(0, h)))
            b = float(_loss_on(ctx, model, batch, out, slice(h, 2 * h)))
    except (ValueError, RuntimeError, IndexError, TypeError) as e:
        f.fail(
            f"the loss failed on the first {n} training examples: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}{_takes_whole_hint(ctx, model, batch)}"
        )
        return None
    f.metrics["loss"] = full
    if not math.isfinite(full):
        f.fail(
            f"the loss on the first {2 * h} training examples is {full} at init: look for "
            "a log of 0 (probabilities into a log loss) or NaN inputs"
        )
        return None
    pe = _per_example_mean(ctx, ctx.pipeline.rows(out, slice(0, 2 * h)), batch.y[: 2 * h])
    mean_half = (a + b) / 2
    k = math.log2(full / mean_half) if full > 0 and mean_half > 0 else float("nan")
    f.metrics.update(
        loss_batch_ratio=full / pe if pe else float("nan"),
        loss_half_ratio=full / mean_half if mean_half else float("nan"),
        loss_scaling_exponent=k,
    )
    unknown = callable(ctx.pipeline.loss) and _loss_expects(ctx)[0] is None
    if unknown and ctx.task.name in ("multiclass", "lm", "binary"):
        _check_plateau(ctx, out, batch.y, f)
    tol = p.mean_rtol * max(abs(a), abs(b), abs(full), 1e-12)
    if not (math.isfinite(a) and math.isfinite(b)) or min(a, b) - tol <= full <= max(a, b) + tol:
        return None
    if k >= p.max_scaling_exponent:
        ratio = f.metrics["loss_batch_ratio"]
        per_example = f"; {ratio:.3g}x the mean per-example loss" if math.isfinite(ratio) else ""
        return (
            f"the loss grows with the batch: {full:.4g} on {2 * h} examples, {a:.4g} and "
            f"{b:.4g} on its halves (a mean lies between them, a sum is their total, "
            f"{a + b:.4g}){per_example}"
        )
    else:
        f.warn(
            f"the batch's loss ({full:.4g} on {2 * h} examples) is not a mean of its "
            f"examples' losses: its halves give {a:.4g} and {b:.4g}, and a mean lies between "
            "them. It depends on which examples share the batch (in-batch negatives, batch "
            "statistics?); the checks that compare per-example losses assume a mean"
        )
    return None


def judge_sum(f: Findings, summed: str, p: Thresholds) -> None:
    """A loss that grows with the batch (a sum) is a choice, never a contract failure: the
    gradient then scales with the batch size, so the lr is tied to it, and whether the lr
    suits it is what the training checks judge (a sum with an lr tuned for a mean diverges
    there). When the user's step clips (the gradient norm the optimizer steps with, measured
    by the step probe as ``step_grad_scale``, is below the loss's own), the update does not
    even scale with the batch: information only (the per-sequence NLL summed and clipped of
    character-level RNN tutorials). Otherwise a warning with the consequence (pytorch/
    examples' VAE and the polynomial-fit tutorial sum on purpose, at an lr chosen for it)."""
    scale = f.metrics.get("step_grad_scale", 1.0)
    if scale < 1 - p.clip_rtol:  # information: a warning would fail gate=strict on a choice
        f.note(
            f"{summed[0].upper()}{summed[1:]}: a summed loss, and the training step scales "
            f"the gradient down before the optimizer steps (to {scale:.3g} of the loss's "
            "gradient norm: clipping), so the update does not grow with the batch size: a "
            "choice, not a bug (reduction='mean' would make the lr independent of it)."
        )
        return
    f.warn(
        f"{summed}: a summed loss, so the gradient (and with SGD the step) grows with the "
        "batch size and the learning rate is tied to it. Fine if the lr was chosen for the "
        "sum (Adam-style optimizers normalise the scale away); otherwise reduce with a mean "
        "(reduction='mean', or divide by the batch size), or clip the gradient norm in the "
        "training step"
    )


# A loss of unknown kind (the user's callable, a framework's step) at outputs that put k on
# every target (one-hot * k; +-k for one binary logit), k = 0, 5, 30. Fed logits, a loss
# falls from k = 0 to k = 30 as the task's cross-entropy does (by ln C), whatever its class
# weights, scale or constant terms (focal: to ~0; label smoothing rises again past k = 5).
# Probabilities fed to a log-softmax level off: at ln(e + C - 1) - 1, above PLATEAU_SHARE
# of the loss at k = 0 for any C (0.45 at C = 2, 0.63 at 10), after a fall of
# ln C + 1 - ln(e + C - 1), at most 0.55 of the cross-entropy's (0.37 at C = 10; 0.23 for
# one binary logit): a fall below PLATEAU_FALL of the cross-entropy's, no lower at k = 30
# than at k = 5 and still above PLATEAU_SHARE of the start is that plateau.
PLATEAU_KS = (0.0, 5.0, 30.0)
PLATEAU_SHARE = 0.25
PLATEAU_FALL = 0.75  # between the plateau's 0.55 and a logits-fed loss's 1


def _check_plateau(ctx: Context, out: Tensor, y: Tensor, f: Findings) -> None:
    """Fail a loss that levels off far above 0 however confident the correct output is."""
    if ctx.task.name == "binary":
        hot = (2 * y.float() - 1).reshape(out.shape).to(out.dtype)  # [B] or [B, 1]: +-1
    elif out.shape[:-1] == y.shape:
        hot = F.one_hot(y.long().clamp_min(0), out.shape[-1]).to(out.dtype)  # [..., C]
    else:
        return
    try:
        with torch.no_grad():
            like = ctx.pipeline.like  # loss_takes: whole: the model's other output elements
            v0, v5, v30 = (float(ctx.loss(like(k * hot, out), y)) for k in PLATEAU_KS)
            ce0, ce30 = (float(ctx.task.loss(k * hot, y)) for k in PLATEAU_KS[::2])
    except (ValueError, RuntimeError, IndexError, TypeError):
        return
    fall = (v0 - v30) / (ce0 - ce30) if ce0 > ce30 else float("nan")
    f.metrics.update(loss_at_confident_output=v30, loss_fall_ratio=fall)
    if not (v30 > PLATEAU_SHARE * v0 and v30 <= v5 and fall < PLATEAU_FALL):
        return
    f.fail(
        f"the loss levels off at {v30:.3g} (from {v0:.3g} at a zero output) however "
        "confident the correct output is: a softmax or sigmoid inside the loss before a "
        "cross-entropy that applies its own (it cannot approach 0 and its gradients "
        "vanish). Feed the logits to the cross-entropy"
    )


def _per_example_mean(ctx: Context, out: Tensor, y: Tensor) -> float:
    try:
        with torch.no_grad():
            return float(ctx.per_example_loss(out, y).mean())
    except (ValueError, RuntimeError, TypeError):  # a loss vmap cannot split: ratio unknown
        return float("nan")
