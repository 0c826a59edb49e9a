"""Task semantics: the loss, what the loss should be at init, the prior, the human metric.

Every check talks to the task through this small interface, so one check works for
classification, binary, regression and language modeling alike.

Shapes (B = batch, C = classes, T = sequence length, V = vocabulary):
    multiclass  out [B, C] logits,      y [B] int64
    binary      out [B] or [B, 1] logit, y [B] (or [B, 1]) float in {0, 1}
    regression  out [B] or [B, 1],       y [B] float
    lm          out [B, T, V] logits,    y [B, T] int64 (next tokens)
    token       out [B, T, C] logits,    y [B, T] int64 (a class per position: tagging, NER)

Integer targets equal to IGNORE_INDEX (-100, PyTorch's and Hugging Face's convention: padding,
the last position of a shifted sequence) carry no target: losses, metrics and priors skip them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from trackcheck.pipeline import IGNORE_INDEX


@dataclass(frozen=True)
class Prior:
    """What a model that ignores its input should predict: class frequencies or the target mean."""

    probs: Tensor | None = None  # [C] for multiclass/lm, [2] (neg, pos) for binary
    mean: float = 0.0  # regression target mean
    var: float = 0.0  # regression target variance


class Task:
    name: str = ""
    metric_name: str = ""  # the human-readable metric: accuracy, mae
    higher_is_better: bool = True
    classification: bool = True
    # the output keeps the time axis, [B, T, C] against [B, T] targets (lm, token)
    per_position: bool = False
    # position t predicts the input at t + 1, so it may read inputs up to t only (lm)
    autoregressive: bool = False

    # --- loss ---------------------------------------------------------------------------
    def per_example_loss(self, out: Tensor, y: Tensor) -> Tensor:
        """[B] loss per example (an LM sequence's loss is its mean over tokens)."""
        raise NotImplementedError

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return self.per_example_loss(out, y).mean()

    # --- init -----------------------------------------------------------------------------
    def prior(self, y: Tensor) -> Prior:
        raise NotImplementedError

    def mean_prediction(self, out: Tensor) -> Tensor:
        """The model's average prediction over a set of outputs: [C] probabilities or [1] mean."""
        raise NotImplementedError

    def constant_loss(self, prior: Prior, mean_pred: Tensor) -> float:
        """Loss of a model that predicts ``mean_pred`` for every input: the value at init.

        It is ln(C) when the prediction is uniform, the label entropy H(prior) when the bias
        carries the prior, Var(y) + (mean(y) - m)^2 for L2 regression.
        """
        raise NotImplementedError

    def prior_loss(self, prior: Prior) -> float:
        """The best input-independent loss: H(prior) or Var(y)."""
        raise NotImplementedError

    def prior_bias(self, prior: Prior) -> Tensor:
        """The final-layer bias that makes the model predict the prior at init."""
        raise NotImplementedError

    def zero_output_prediction(self, mean_pred: Tensor) -> Tensor:
        """What an all-zero output predicts: uniform probabilities, or 0 for regression."""
        if self.classification:
            return torch.full_like(mean_pred, 1.0 / mean_pred.numel())
        return torch.zeros_like(mean_pred)

    # --- metrics and decoding -------------------------------------------------------------
    def per_example_metric(self, out: Tensor, y: Tensor) -> Tensor:
        """[B] human metric per example (1.0/0.0 correct, or absolute error)."""
        raise NotImplementedError

    def target_score(self, out: Tensor, y: Tensor) -> Tensor:
        """[B] what prediction plots show: probability of the true class, or y-hat."""
        raise NotImplementedError


class _Categorical(Task):
    """Tasks whose prior is a distribution over classes: the loss of a constant prediction
    is the cross-entropy H(prior, mean prediction)."""

    def constant_loss(self, prior: Prior, mean_pred: Tensor) -> float:
        assert prior.probs is not None
        p = mean_pred.double().clamp_min(1e-12)
        return float(-(prior.probs.double() * p.log()).sum())

    def prior_loss(self, prior: Prior) -> float:
        assert prior.probs is not None
        return self.constant_loss(prior, prior.probs)


class Multiclass(_Categorical):
    name = "multiclass"
    metric_name = "accuracy"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def _flat(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return out.reshape(-1, out.shape[-1]), y.reshape(-1)

    def per_example_loss(self, out: Tensor, y: Tensor) -> Tensor:
        if out.dim() != 2 or out.shape[-1] != self.num_classes:
            raise ValueError(
                f"multiclass output should be [batch, {self.num_classes}] logits, got "
                f"{list(out.shape)}: check the model's final layer size (data.num_outputs)"
            )
        return F.cross_entropy(out, y.long(), reduction="none", ignore_index=IGNORE_INDEX)

    def prior(self, y: Tensor) -> Prior:
        ids = y.reshape(-1).long()
        ids = ids[(ids >= 0) & (ids < self.num_classes)]  # ignored or out-of-range ids: no class
        counts = torch.bincount(ids, minlength=self.num_classes).double()
        return Prior(probs=counts / counts.sum().clamp_min(1))

    def mean_prediction(self, out: Tensor) -> Tensor:
        return out.reshape(-1, out.shape[-1]).double().softmax(-1).mean(0)

    def prior_bias(self, prior: Prior) -> Tensor:
        assert prior.probs is not None
        # log-prior, centred: softmax is shift-invariant and a centred bias reads better
        b = prior.probs.clamp_min(1e-6).log()
        return (b - b.mean()).float()

    def per_example_metric(self, out: Tensor, y: Tensor) -> Tensor:
        return (out.argmax(-1) == y).float()

    def target_score(self, out: Tensor, y: Tensor) -> Tensor:
        ids = y.long().clamp_min(0).unsqueeze(-1)  # ignored positions read class 0, masked later
        return out.softmax(-1).gather(-1, ids).squeeze(-1)


class LanguageModeling(Multiclass):
    """Next-token prediction: multiclass over the vocabulary at every position."""

    name = "lm"
    metric_name = "token_accuracy"
    per_position = True
    autoregressive = True

    def per_example_loss(self, out: Tensor, y: Tensor) -> Tensor:
        if out.dim() != 3 or out.shape[-1] != self.num_classes:
            raise ValueError(
                f"language-model output should be [batch, time, {self.num_classes}] logits, "
                f"got {list(out.shape)}"
            )
        tok = F.cross_entropy(
            out.transpose(1, 2), y.long(), reduction="none", ignore_index=IGNORE_INDEX
        )  # [B, T], 0 at ignored positions
        return _mean_valid(tok, y)

    def per_example_metric(self, out: Tensor, y: Tensor) -> Tensor:
        return _mean_valid((out.argmax(-1) == y).float(), y)

    def target_score(self, out: Tensor, y: Tensor) -> Tensor:
        # mean probability of the true next token over the sequence's valid positions: [B]
        return _mean_valid(super().target_score(out, y), y)


class TokenClassification(LanguageModeling):
    """A class per position (BertForTokenClassification, NER and part-of-speech taggers):
    the same loss, prior and metric as language modeling, per position, but the targets are
    tags, not the next inputs, so the model may read the whole sequence (a bidirectional
    encoder is correct by design) and the labels are never shifted."""

    name = "token"
    autoregressive = False


def _mean_valid(v: Tensor, y: Tensor) -> Tensor:
    """[B, T] per-token values -> [B] their mean over the positions that carry a target."""
    valid = (y != IGNORE_INDEX).to(v.dtype)
    return (v * valid).sum(-1) / valid.sum(-1).clamp_min(1)


class Binary(_Categorical):
    name = "binary"
    metric_name = "accuracy"

    @staticmethod
    def _logit(out: Tensor) -> Tensor:
        if out.dim() == 2 and out.shape[-1] == 1:
            out = out.squeeze(-1)
        if out.dim() != 1:
            raise ValueError(
                f"binary output should be [batch] or [batch, 1] logits, got {list(out.shape)}"
            )
        return out

    @staticmethod
    def _target(y: Tensor) -> Tensor:
        """[B] targets from [B] or [B, 1] (shaped like the output, as nn.BCELoss wants them):
        compared with a [B] logit, a [B, 1] target would broadcast to [B, B]."""
        return y.squeeze(-1) if y.dim() == 2 and y.shape[-1] == 1 else y

    def per_example_loss(self, out: Tensor, y: Tensor) -> Tensor:
        logit = self._logit(out)
        return F.binary_cross_entropy_with_logits(logit, self._target(y).float(), reduction="none")

    def prior(self, y: Tensor) -> Prior:
        p = float(y.float().mean())
        return Prior(probs=torch.tensor([1 - p, p], dtype=torch.float64))

    def mean_prediction(self, out: Tensor) -> Tensor:
        p = torch.sigmoid(self._logit(out).double()).mean()
        return torch.stack([1 - p, p])

    def prior_bias(self, prior: Prior) -> Tensor:
        assert prior.probs is not None
        p = float(prior.probs[1].clamp(1e-6, 1 - 1e-6))
        return torch.tensor([math.log(p / (1 - p))])

    def per_example_metric(self, out: Tensor, y: Tensor) -> Tensor:
        return ((self._logit(out) > 0).float() == self._target(y).float()).float()

    def target_score(self, out: Tensor, y: Tensor) -> Tensor:
        p = torch.sigmoid(self._logit(out))
        return torch.where(self._target(y).bool(), p, 1 - p)


class Regression(Task):
    name = "regression"
    metric_name = "mae"
    higher_is_better = False
    classification = False

    @staticmethod
    def _pred(out: Tensor, y: Tensor) -> Tensor:
        if out.dim() == y.dim() + 1 and out.shape[-1] == 1:
            out = out.squeeze(-1)
        if out.shape != y.shape:
            raise ValueError(
                f"regression output {list(out.shape)} does not match targets {list(y.shape)}: "
                "a [B] vs [B, 1] mismatch broadcasts silently to [B, B] in MSELoss"
            )
        return out

    def per_example_loss(self, out: Tensor, y: Tensor) -> Tensor:
        d = (self._pred(out, y) - y.float()) ** 2
        return d.reshape(d.shape[0], -1).mean(-1)

    def prior(self, y: Tensor) -> Prior:
        y = y.double()
        return Prior(mean=float(y.mean()), var=float(y.var(unbiased=False)))

    def mean_prediction(self, out: Tensor) -> Tensor:
        return out.double().mean().reshape(1)

    def constant_loss(self, prior: Prior, mean_pred: Tensor) -> float:
        return prior.var + (prior.mean - float(mean_pred[0])) ** 2

    def prior_loss(self, prior: Prior) -> float:
        return prior.var

    def prior_bias(self, prior: Prior) -> Tensor:
        return torch.tensor([prior.mean])

    def per_example_metric(self, out: Tensor, y: Tensor) -> Tensor:
        d = (self._pred(out, y) - y.float()).abs()
        return d.reshape(d.shape[0], -1).mean(-1)

    def target_score(self, out: Tensor, y: Tensor) -> Tensor:
        return self._pred(out, y).reshape(out.shape[0], -1).mean(-1)


TASKS = ("multiclass", "binary", "regression", "lm", "token")


def make_task(name: str, num_outputs: int = 1) -> Task:
    """``name`` is one of TASKS (``token``: a class per position, e.g. NER tagging)."""
    if name == "multiclass":
        return Multiclass(num_outputs)
    if name == "lm":
        return LanguageModeling(num_outputs)
    if name == "token":
        return TokenClassification(num_outputs)
    if name == "binary":
        return Binary()
    if name == "regression":
        return Regression()
    raise ValueError(f"unknown task {name!r}: use one of {', '.join(TASKS)}")


# --- telling a tagger from a language model --------------------------------------------------
# a language model's targets are its inputs (at the same position, shifted inside the model,
# or one position on): on a real text nearly every valid position matches. A tagger's tags
# match its token ids only by chance (about 1 in C). Half is far from both.
ALIGNED_SHARE = 0.5


def alignment(ids: Tensor, y: Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[float, float]:
    """(share of target positions equal to the input at the same position, share equal to
    the input one position on), over the positions that carry a target; ``ids`` and ``y``
    are [B, T] integers."""
    valid = y != ignore_index
    same = float((ids == y)[valid].float().mean()) if bool(valid.any()) else 0.0
    nxt_valid = valid[:, :-1]
    nxt = (ids[:, 1:] == y[:, :-1])[nxt_valid]
    return same, float(nxt.float().mean()) if nxt.numel() else 0.0


def integer_sequences(x: Any, like: Tensor) -> list[tuple[Any, Tensor]]:
    """The token-id input tensors of ``x`` shaped like the targets ``like`` [B, T]: (the
    position of each in ``x``: None for a bare tensor, an index or a key; the tensor).
    Integer tensors of at most two values are masks or segment ids (``attention_mask``,
    ``token_type_ids``), not tokens: all-zero segment ids would match a tagger's majority
    tag 0 at most positions."""
    if isinstance(x, Tensor):
        items: list[tuple[Any, Any]] = [(None, x)]
    elif isinstance(x, Mapping):
        items = list(x.items())
    elif isinstance(x, tuple | list):
        items = list(enumerate(x))
    else:
        return []
    return [
        (k, v)
        for k, v in items
        if isinstance(v, Tensor)
        and not v.is_floating_point()
        and v.dtype != torch.bool
        and v.shape == like.shape
        and v.unique().numel() > 2
    ]


def detect(task: Task, data: Any, pipeline: Any, n: int = 16) -> tuple[Task, str]:
    """``task`` as configured, or a :class:`TokenClassification` when it says ``lm`` but the
    targets are not the inputs' next tokens (a tagger given task lm: [B, T, C] logits
    against tags); with the reason, "" when kept. The first ``n`` training examples are
    read, without the language-model shift; a batch that cannot be read keeps the task (the
    contract check says what is wrong with it)."""
    if type(task) is not LanguageModeling:
        return task, ""
    try:
        b = dataclasses.replace(pipeline, task_name=TokenClassification.name).split(
            data.head("train", n)
        )
    except Exception:  # noqa: BLE001 - an unreadable batch is the contract's to report
        return task, ""
    y = b.y
    if not isinstance(y, Tensor) or y.dim() != 2 or y.is_floating_point() or y.shape[1] < 2:
        return task, ""
    seqs = integer_sequences(b.x, y)
    if not seqs:
        return task, ""  # no token ids to compare with (embeddings given): keep it
    ign = getattr(pipeline, "ignore_index", IGNORE_INDEX)
    best = max(max(alignment(v, y, ign)) for _, v in seqs)
    if best >= ALIGNED_SHARE:
        return task, ""
    return TokenClassification(task.num_classes), (
        f"configured as task lm, but only {best:.0%} of the targets are an input token at the "
        "same or the next position, so read as token classification, a class per position; "
        "data.task=token says so directly"
    )
