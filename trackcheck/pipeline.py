"""The seam between trackcheck and the user's pipeline: how a batch goes in, what comes out,
which loss is used, and (optionally) the user's own training step.

Every check reaches the model through one :class:`Pipeline` (``ctx.forward``, ``ctx.loss``,
``ctx.train_step``), so a Hugging Face model with dict batches and a ``ModelOutput``, a
torchvision model with tuple batches, and a user's own loss all work in every check.

Conventions, all configurable (Hydra: the ``pipeline:`` node; Python: ``trackcheck.run(...,
pipeline=Pipeline(...))``):

* Batches: ``(inputs, target)`` tuples (``(x1, x2, ..., target)``: the model gets
  ``model(x1, x2, ...)``), or dicts (the Hugging Face convention): the target is
  ``batch["labels"]`` (or ``label``, ``targets``, ``target``, ``y``) and the other keys are
  passed as keyword arguments, ``model(input_ids=..., attention_mask=...)``.
* Outputs: a tensor, a tuple (its element ``output_index``, the first by default), or a
  dict / ``ModelOutput`` (its ``logits``, or the only tensor in it). ``use_cache=False``
  is passed to a forward that accepts it: a KV cache is state the checks must not carry
  between calls.
* Targets: ``ignore_index`` (-100) marks positions without a target; positions where the
  batch's ``attention_mask`` is 0 are marked so as well. For a language model fed dict
  batches, the labels are the inputs (Hugging Face causal LMs shift inside the model), so
  they are shifted here once: ``y[:, t] = labels[:, t + 1]``, the last position ignored.
  Tuple batches for ``task: lm`` already hold the next tokens.
* Loss: ``None`` uses the task's loss (cross-entropy, BCE with logits, MSE); a callable
  ``loss(output, target) -> scalar`` is the user's own (``nn.CrossEntropyLoss(
  label_smoothing=0.1)``, a focal loss); ``"model"`` uses the loss the model computes itself
  when given its targets (``labels=`` for Hugging Face, else the argument its forward names:
  nanoGPT's ``targets=``), read from ``output.loss`` or the scalar in a returned tuple. A
  language model that returns the last position alone without targets (nanoGPT) is given
  dummy targets for every position's logits.
* What the loss takes: ``loss_takes: prediction`` (default) calls ``loss(prediction,
  target)``; ``loss_takes: whole`` calls it on the model's whole output, a tuple or dict as
  the model returned it (a VAE's ``loss((recon, mu, logvar), x)``). Training and every
  loss evaluation then use the whole output, while the checks that judge the prediction
  read the prediction element; where a check builds outputs of its own (uniform, the
  prior, the best reachable), they take the prediction's place and the other elements stay
  as the model produced them on the same examples (:meth:`Pipeline.like`). A check that
  cannot pair its outputs with the model's is skipped with one line saying so.
* Output domain: what the loss reads the output as, ``logits`` (the task's losses),
  ``probs`` (a sigmoid or softmax head under ``nn.BCELoss`` or MSE) or ``log_probs``
  (``log_softmax`` + ``F.nll_loss``); unset, it is detected from the loss and the outputs,
  and the checks build the outputs they compare against (uniform, the prior, the best
  reachable) in that domain.
* Axes: ``batch_first`` (default true): the model reads and returns tensors with the batch
  first. ``batch_first: false`` is a sequence-first model (PyTorch's word-language-model
  example, ``nn.Transformer`` with its default ``batch_first=False``): the loader's
  [B, T, ...] inputs are handed to it as [T, B, ...], and its [T, B, ...] output (or the
  flattened [T*B, ...]) read back as [B, T, ...], so the checks, the loss and the metrics see
  batch-first tensors; a training step gets its batch sequence-first (what the model reads).
* Step: ``None`` runs ``zero_grad, loss, backward, step``; a callable ``step(model, batch,
  optimizer) -> loss`` is the user's own training step, given the batch as the loader yields
  it, so a bug in the step shows in the checks that train.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackcheck.core import SkipCheck

IGNORE_INDEX = -100
TARGET_KEYS = ("labels", "label", "targets", "target", "y")
# dict inputs: the tensor that carries the example's content (the one checks blank, chart
# and show); the first key present wins, else the first tensor
PRIMARY_KEYS = ("input_ids", "pixel_values", "input_values", "inputs_embeds", "x")

LossFn = Callable[[Tensor, Tensor], Tensor]
StepFn = Callable[[nn.Module, Any, torch.optim.Optimizer], Any]


class PipelineError(ValueError):
    """A batch, an output or a loss that trackcheck cannot read; the message says how to
    configure it (``pipeline.*``, ``loss``)."""


class WholeOutputUnavailable(SkipCheck):
    """``loss_takes: whole``, but a check evaluated the loss on a prediction it cannot pair
    with the model's other output elements (outputs it built itself, of other examples):
    the check is skipped rather than judged on a loss the user does not train."""


# the attribute of a prediction tensor that holds the whole output it came from, under
# loss_takes: whole (set by Pipeline.prediction and Pipeline.like, read by Pipeline.whole)
_WHOLE = "_trackcheck_whole"


@dataclass
class Batch:
    """One batch, split: ``x`` the model's inputs (a tensor, a tuple of positional inputs, or
    a dict of keyword inputs), ``y`` the aligned target, ``raw`` the batch as the loader gave
    it (what a user's training step receives). Unpacks as ``x, y``."""

    x: Any
    y: Tensor
    raw: Any = None

    def __iter__(self) -> Iterator[Any]:
        yield self.x
        yield self.y

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Pipeline:
    """How batches, outputs and the loss are read (module docstring: the conventions)."""

    target_key: str | None = None  # dict batches; None: the first of TARGET_KEYS present
    input_keys: list[str] | None = None  # dict batches; None: every key but the target
    output_key: str | None = None  # dict/ModelOutput outputs; None: "logits" or the only tensor
    loss: LossFn | str | None = None  # None: the task's; "model": the model's own .loss
    step: StepFn | None = None  # the user's training step(model, batch, optimizer) -> loss
    shift_labels: bool | None = None  # LM dict batches: None = shift (Hugging Face convention)
    ignore_index: int = IGNORE_INDEX
    mask_key: str | None = "attention_mask"  # 0 there -> target ignored (None: not used)
    forward_kwargs: dict[str, Any] = field(default_factory=dict)
    # what the loss reads the model's output as: "logits", "probs" (a softmax / sigmoid head
    # under MSE or nn.BCELoss), "log_probs" (log_softmax + F.nll_loss); None: detected from
    # the loss and the outputs (trackcheck.checks._shared._domain)
    output_domain: str | None = None
    # false: the model reads [T, B, ...] and returns [T, B, ...] or [T*B, ...] (sequence-first)
    batch_first: bool = True
    # "whole": the loss takes the model's whole output (a tuple or dict), not the prediction
    loss_takes: str = "prediction"
    output_index: int = 0  # tuple outputs: the element that is the prediction
    task_name: str = ""  # set by the Context: shifting applies to language modeling only

    def __post_init__(self) -> None:
        if isinstance(self.loss, str) and self.loss not in ("model", "task"):
            raise PipelineError(
                f"loss={self.loss!r}: give a callable loss(output, target), 'model' (the "
                "model's own .loss) or leave it unset for the task's loss"
            )
        if self.loss == "task":
            self.loss = None
        if self.output_domain not in (None, "logits", "probs", "log_probs"):
            raise PipelineError(
                f"pipeline.output_domain={self.output_domain!r}: use logits, probs or log_probs "
                "(what your loss reads the model's output as), or leave it unset to detect it"
            )
        if self.loss_takes not in ("prediction", "whole"):
            raise PipelineError(
                f"pipeline.loss_takes={self.loss_takes!r}: use prediction (the loss gets the "
                "prediction tensor) or whole (it gets the model's whole output, a tuple or dict)"
            )
        if self.loss_takes == "whole" and not self.batch_first:
            raise PipelineError(
                "pipeline.loss_takes=whole with pipeline.batch_first=false is not supported: "
                "return the outputs batch first, or give a loss of the prediction alone"
            )

    @property
    def model_loss(self) -> bool:
        return self.loss == "model"

    @property
    def takes_whole(self) -> bool:
        """The user's loss takes the model's whole output (``loss_takes: whole``)."""
        return self.loss_takes == "whole" and callable(self.loss)

    # --- batches ------------------------------------------------------------------------
    def split(self, batch: Any) -> Batch:
        """The loader's batch -> Batch(x, y, raw)."""
        if isinstance(batch, Batch):
            return batch
        if isinstance(batch, Mapping):
            return self._split_dict(batch)
        if isinstance(batch, list | tuple) and len(batch) >= 2:
            x = batch[0] if len(batch) == 2 else tuple(batch[:-1])
            return Batch(x, self._as_target(batch[-1]), batch)
        raise PipelineError(
            f"a batch is a {type(batch).__name__}: expected (inputs, target) or a dict with a "
            "'labels' key; set data.collate_fn (or pipeline.target_key for dicts)"
        )

    def target_key_in(self, batch: Mapping[str, Any]) -> str | None:
        """The key of a dict batch (or item) that holds the target: ``target_key``, else the
        first of TARGET_KEYS present; None when there is none."""
        return self.target_key or next((k for k in TARGET_KEYS if k in batch), None)

    def _split_dict(self, batch: Mapping[str, Any]) -> Batch:
        key = self.target_key_in(batch)
        if key is None or key not in batch:
            raise PipelineError(
                f"a dict batch with keys {sorted(batch)} has no target "
                f"{'key ' + repr(key) if key else '(looked for ' + ', '.join(TARGET_KEYS) + ')'}"
                ": set pipeline.target_key to the key that holds the labels"
            )
        keys = self.input_keys or [k for k in batch if k != key]
        missing = [k for k in keys if k not in batch]
        if missing:
            raise PipelineError(
                f"pipeline.input_keys names {missing}, not in the batch's keys {sorted(batch)}"
            )
        x = {k: batch[k] for k in keys}
        y = self._as_target(batch[key])
        mask = batch.get(self.mask_key) if self.mask_key else None
        if isinstance(mask, Tensor) and mask.shape == y.shape and not y.is_floating_point():
            y = y.masked_fill(mask == 0, self.ignore_index)  # before the shift: mask[t] is y[t]'s
        if self.task_name == "lm" and self.shift_labels is not False:
            y = shift_left(y, self.ignore_index)
        return Batch(x, y, batch)

    @staticmethod
    def _as_target(y: Any) -> Tensor:
        if isinstance(y, Tensor):
            return y
        try:
            return torch.as_tensor(y)
        except (TypeError, ValueError, RuntimeError) as e:
            raise PipelineError(
                f"the batch's target is a {type(y).__name__}, not a tensor: collate it into "
                f"one (data.collate_fn) ({e})"
            ) from e

    def with_inputs(self, b: Batch, x: Any) -> Batch:
        """The same batch with other inputs (blanked, sliced): the raw batch follows."""
        raw = b.raw
        if isinstance(raw, Mapping) and isinstance(x, Mapping):
            raw = {**raw, **x}
        elif isinstance(raw, list | tuple):
            raw = [*(x if isinstance(x, tuple) and len(raw) > 2 else (x,)), raw[-1]]
        return Batch(x, b.y, raw)

    # --- the model ----------------------------------------------------------------------
    def call(self, model: nn.Module, x: Any, **extra: Any) -> Any:
        """``model`` applied to inputs ``x`` as the batch convention says; the raw output."""
        kwargs = {**_default_kwargs(model), **self.forward_kwargs, **extra}
        x = self.model_layout(x)
        if isinstance(x, Mapping):
            return model(**x, **kwargs)
        if isinstance(x, tuple):
            return model(*x, **kwargs)
        return model(x, **kwargs)

    def output(self, out: Any) -> Tensor:
        """The prediction tensor in a model's raw output."""
        if isinstance(out, Tensor):
            return out
        if isinstance(out, Mapping):  # dicts and Hugging Face ModelOutput
            key = self.output_key or ("logits" if "logits" in out else None)
            if key is not None and isinstance(out.get(key), Tensor):
                return out[key]  # type: ignore[no-any-return]
            tensors = [k for k, v in out.items() if isinstance(v, Tensor) and k != "loss"]
            if key is None and len(tensors) == 1:
                return out[tensors[0]]  # type: ignore[no-any-return]
            raise PipelineError(
                f"the model returned a {type(out).__name__} with keys {list(out.keys())} and "
                f"no tensor at {key or 'logits'!r}: set pipeline.output_key to the key that "
                "holds the predictions"
            )
        if isinstance(out, list | tuple) and out:
            i = self.output_index
            if not -len(out) <= i < len(out):
                raise PipelineError(
                    f"pipeline.output_index={i}, but the model returned a {type(out).__name__} "
                    f"of {len(out)} elements: set it to the index of the prediction"
                )
            if isinstance(out[i], Tensor):
                return out[i]  # type: ignore[no-any-return]
            raise PipelineError(
                f"element {i} of the model's {type(out).__name__} output is a "
                f"{type(out[i]).__name__}, not a tensor: set pipeline.output_index to the "
                "index of the prediction"
            )
        raise PipelineError(
            f"the model returned a {type(out).__name__}, not a tensor, tuple, dict or "
            "ModelOutput: return the logits, or set pipeline.output_key"
        )

    def forward(self, model: nn.Module, x: Any) -> Tensor:
        cls = type(model)
        # a target argument is only looked for on a batch-first language model (nanoGPT)
        lm = self.task_name == "lm" and self.batch_first
        arg = target_arg(model) if lm else None
        if arg is not None and cls in _CUT_WITHOUT_TARGETS:
            return self.prediction(self.call(model, x, **{arg: _dummy_targets(x)}), x)
        raw = self.call(model, x)
        out = self.prediction(raw, x)
        if arg is not None and _last_position_only(out, x):
            # nanoGPT: forward(idx, targets=None) returns the last position's logits alone
            # when no targets come (its generation path); given any, every position's
            _CUT_WITHOUT_TARGETS.add(cls)
            return self.prediction(self.call(model, x, **{arg: _dummy_targets(x)}), x)
        return out

    def prediction(self, raw: Any, x: Any) -> Tensor:
        """The prediction tensor of a model's raw output on inputs ``x``, batch first (under
        ``loss_takes: whole`` it carries the whole output, for :meth:`whole`)."""
        out = self.output(raw)
        if self.takes_whole:
            if isinstance(raw, Tensor):
                raise PipelineError(
                    f"pipeline.loss_takes=whole, but the model returned one tensor "
                    f"{list(raw.shape)}, not a tuple or dict: set pipeline.loss_takes="
                    "prediction, or return every output your loss reads"
                )
            setattr(out, _WHOLE, self._split_whole(raw))
        if self.batch_first:
            return out
        t, b = primary(self.model_layout(x)).shape[:2]
        if out.dim() >= 2 and out.shape[:2] == (t, b):
            return out.transpose(0, 1)
        if out.dim() >= 1 and out.shape[0] == t * b:  # flattened [T*B, ...], t-major
            return out.reshape(t, b, *out.shape[1:]).transpose(0, 1)
        raise PipelineError(
            f"pipeline.batch_first=false, but the model returned {list(out.shape)} for "
            f"[{t}, {b}] (time, batch) inputs: expected [{t}, {b}, ...] or [{t * b}, ...] "
            "(a sequence-first output), or set pipeline.batch_first=true"
        )

    # --- loss_takes: whole -------------------------------------------------------------------
    def whole(self, pred: Tensor) -> Any:
        """The whole output the loss takes for prediction ``pred``: the model's output with
        ``pred`` in the prediction's place (``pred`` itself unless ``loss_takes: whole``).
        Raises :class:`WholeOutputUnavailable` for a prediction with no whole output known."""
        if not self.takes_whole:
            return pred
        raw = getattr(pred, _WHOLE, None)
        if raw is None:
            raise WholeOutputUnavailable(
                "pipeline.loss_takes=whole: this check evaluates the loss on outputs it cannot "
                "pair with the model's other output elements, so it is not judged"
            )
        return raw.with_prediction(pred)

    def user_loss(self) -> LossFn:
        """The user's callable loss as a loss of (prediction, target): under ``loss_takes:
        whole`` it is given the prediction's whole output (:meth:`whole`)."""
        fn = self.loss
        if not callable(fn):
            raise PipelineError("no callable loss configured")
        if not self.takes_whole:
            return fn
        return lambda pred, y: fn(self.whole(pred), y)

    def per_example_parts(self, fn: LossFn, pred: Tensor) -> tuple[Any, Callable[..., Tensor]]:
        """Under ``loss_takes: whole``: (the prediction and the whole output's other batched
        elements, as one tuple to split into examples; the loss of such a tuple and a
        target), so each example's loss sees its own mu, logvar."""
        whole = getattr(pred, _WHOLE, None)
        if whole is None:
            self.whole(pred)  # raises WholeOutputUnavailable
        assert isinstance(whole, _Whole)
        keys = whole.batched(len(pred))

        def loss(parts: tuple[Tensor, ...], y: Tensor) -> Tensor:
            w = whole.copy()  # its batched slots replaced by this example's
            for k, v in zip(keys, parts[1:], strict=True):
                w.parts[k] = v
            return fn(w.with_prediction(parts[0]), y)

        return (pred, *(whole.parts[k] for k in keys)), loss

    def _split_whole(self, raw: Any) -> _Whole:
        """A tuple, list or dict output as its elements with the prediction's slot empty
        (the prediction tensor holds this, so it must not hold the prediction: no cycle)."""
        if isinstance(raw, Mapping):
            key = self.output_key or ("logits" if "logits" in raw else None)
            if key is None:
                key = next(k for k, v in raw.items() if isinstance(v, Tensor) and k != "loss")
            return _Whole({**raw, key: None}, key, type(raw))
        parts = list(raw)
        parts[self.output_index] = None
        return _Whole(parts, self.output_index, type(raw))

    def like(self, built: Tensor, model_out: Tensor, rows: Any = None) -> Tensor:
        """``built`` (outputs a check made, shaped like the prediction ``model_out``, or like
        its rows ``rows``) given the model's other output elements for the same examples,
        detached: a VAE's KL term is then the model's own. ``built`` unchanged otherwise."""
        raw = getattr(model_out, _WHOLE, None) if self.takes_whole else None
        if raw is not None:
            n = len(model_out)
            rest = raw.map(
                n, lambda t: (t.detach() if rows is None else t.detach()[rows]).to(built.device)
            )
            setattr(built, _WHOLE, rest)
        return built

    def cat(self, preds: list[Tensor]) -> Tensor:
        """``torch.cat`` of predictions, their whole outputs concatenated alike."""
        out = torch.cat(preds)
        raws = [getattr(p, _WHOLE, None) for p in preds] if self.takes_whole else []
        wholes = [r for r in raws if isinstance(r, _Whole)]
        if wholes and len(wholes) == len(preds):
            setattr(out, _WHOLE, _Whole.cat(wholes, [len(p) for p in preds]))
        return out

    def rows(self, pred: Tensor, idx: Any) -> Tensor:
        """``pred[idx]``, its whole output sliced alike."""
        return self.like(pred[idx], pred, idx)

    def model_layout(self, batch: Any) -> Any:
        """Inputs (or a whole batch) in the model's layout: every tensor of two or more
        dimensions [B, T, ...] -> [T, B, ...] for a sequence-first model; as is otherwise."""
        if self.batch_first:
            return batch
        if isinstance(batch, Tensor):
            return batch.transpose(0, 1) if batch.dim() >= 2 else batch
        if isinstance(batch, Mapping):
            return {k: self.model_layout(v) for k, v in batch.items()}
        if isinstance(batch, tuple | list):
            return type(batch)(self.model_layout(v) for v in batch)
        return batch

    def call_with_targets(self, model: nn.Module, x: Any, y: Tensor) -> Any:
        """``model`` given the batch's targets, for a model that computes its own loss
        (``loss: model``): as ``labels=`` (Hugging Face, whose language models shift the
        labels themselves: the shift is undone) or under the name its forward takes them by
        (nanoGPT's ``targets=``, ``y=``: compared with its logits as given)."""
        arg = target_arg(model)
        if arg is None:
            raise PipelineError(
                f"loss: model, but {type(model).__name__}.forward takes no targets (no "
                f"argument named {', '.join(TARGET_KEYS)}): use the task's loss (leave loss "
                "unset) or your own loss(output, target)"
            )
        return self.call(model, x, **{arg: self.labels_for_model(y) if arg == "labels" else y})

    def labels_for_model(self, y: Tensor) -> Tensor:
        """The ``labels=`` a model that computes its own loss expects: the shift undone
        (Hugging Face causal LMs shift inside), ignored positions kept at ignore_index."""
        if self.task_name == "lm" and self.shift_labels is not False:
            y = F.pad(y, (1, 0), value=self.ignore_index)[..., :-1]
        return self.model_layout(y)


@dataclass
class _Whole:
    """A model's whole output, its prediction's slot empty: ``parts`` (a list, or a dict of
    the output's keys), ``slot`` (the prediction's index or key), ``kind`` (the output's
    type, rebuilt by :meth:`with_prediction`)."""

    parts: Any
    slot: Any
    kind: type

    def with_prediction(self, pred: Tensor) -> Any:
        if isinstance(self.parts, dict):
            d = {**self.parts, self.slot: pred}
            try:
                return self.kind(**d)  # a ModelOutput stays one (attribute access)
            except Exception:  # noqa: BLE001 - a mapping that cannot be rebuilt: a plain dict
                return d
        parts = list(self.parts)
        parts[self.slot] = pred
        if hasattr(self.kind, "_fields"):  # a namedtuple
            return self.kind(*parts)
        return self.kind(parts) if self.kind in (tuple, list) else tuple(parts)

    def copy(self) -> _Whole:
        parts = dict(self.parts) if isinstance(self.parts, dict) else list(self.parts)
        return _Whole(parts, self.slot, self.kind)

    def map(self, n: int, fn: Callable[[Tensor], Tensor]) -> _Whole:
        """``fn`` applied to each element with ``n`` rows (the batched ones)."""

        def f(v: Any) -> Any:
            return fn(v) if isinstance(v, Tensor) and v.ndim > 0 and len(v) == n else v

        if isinstance(self.parts, dict):
            return _Whole({k: f(v) for k, v in self.parts.items()}, self.slot, self.kind)
        return _Whole([f(v) for v in self.parts], self.slot, self.kind)

    @staticmethod
    def cat(wholes: list[_Whole], ns: list[int]) -> _Whole:
        """Whole outputs of consecutive batches (of ``ns`` rows) as one: batched elements
        concatenated, the others taken from the first."""
        first = wholes[0]

        def joined(vs: list[Any]) -> Any:
            ok = all(
                isinstance(v, Tensor) and v.ndim > 0 and len(v) == n
                for v, n in zip(vs, ns, strict=True)
            )
            return torch.cat([v.detach() for v in vs]) if ok else vs[0]

        if isinstance(first.parts, dict):
            parts: Any = {k: joined([w.parts[k] for w in wholes]) for k in first.parts}
        else:
            parts = [joined([w.parts[i] for w in wholes]) for i in range(len(first.parts))]
        return _Whole(parts, first.slot, first.kind)

    def batched(self, n: int) -> list[Any]:
        """The keys (or indices) of the elements with ``n`` rows."""
        items = self.parts.items() if isinstance(self.parts, dict) else enumerate(self.parts)
        return [k for k, v in items if isinstance(v, Tensor) and v.ndim > 0 and len(v) == n]


def model_loss() -> str:
    """``loss: model`` for Hydra (``loss=model``): the model computes its own loss."""
    return "model"


def shift_left(y: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """[B, T] labels -> next-token targets: ``out[:, t] = y[:, t + 1]``, the last ignored."""
    return F.pad(y[..., 1:], (0, 1), value=ignore_index)


def model_loss_of(raw: Any) -> Tensor | None:
    """The loss in the output of a model given its targets: ``.loss`` (a ModelOutput or a
    dict's ``"loss"``), or the one scalar tensor of a tuple (nanoGPT's ``(logits, loss)``)."""
    loss = getattr(raw, "loss", None)
    if loss is None and isinstance(raw, Mapping):
        loss = raw.get("loss")
    if loss is None and isinstance(raw, list | tuple):
        scalars = [v for v in raw if isinstance(v, Tensor) and v.ndim == 0]
        loss = scalars[0] if len(scalars) == 1 else None
    return loss if isinstance(loss, Tensor) else None


_TARGET_ARG_CACHE: dict[type, str | None] = {}
# model classes whose forward returns the last position only unless given targets
_CUT_WITHOUT_TARGETS: set[type] = set()


def target_arg(model: nn.Module) -> str | None:
    """The argument the model's forward takes the targets by: ``labels`` (Hugging Face, or a
    forward taking ``**kwargs``), else the first of TARGET_KEYS it names (nanoGPT's
    ``targets``); None when it takes none."""
    cls = type(model)
    if cls not in _TARGET_ARG_CACHE:
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        named = [k for k in TARGET_KEYS if k in params]
        takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
        _TARGET_ARG_CACHE[cls] = named[0] if named else "labels" if takes_any else None
    return _TARGET_ARG_CACHE[cls]


def _last_position_only(out: Tensor, x: Any) -> bool:
    """``out`` [B, 1, V] for inputs [B, T > 1]: a language model's logits cut to the last
    position."""
    t = primary(x)
    return t.ndim == 2 and t.shape[1] > 1 and out.ndim == 3 and out.shape[:2] == (t.shape[0], 1)


def _dummy_targets(x: Any) -> Tensor:
    """[B, T] targets of token 0: they make the model return every position's logits, and a
    model's logits do not depend on its targets (its loss, not read here, does)."""
    return torch.zeros_like(primary(x), dtype=torch.long)


_KWARG_CACHE: dict[type, dict[str, Any]] = {}


def _default_kwargs(model: nn.Module) -> dict[str, Any]:
    """``use_cache=False`` for a forward that takes it (Hugging Face decoders): a KV cache
    in the output is state, and torch.func cannot return it."""
    cls = type(model)
    if cls not in _KWARG_CACHE:
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        _KWARG_CACHE[cls] = {"use_cache": False} if "use_cache" in params else {}
    return _KWARG_CACHE[cls]


def primary_key(x: Mapping[str, Any]) -> str:
    """The key of the tensor that carries a dict input's content (PRIMARY_KEYS)."""
    for k in PRIMARY_KEYS:
        if isinstance(x.get(k), Tensor):
            return k
    for k, v in x.items():
        if isinstance(v, Tensor):
            return str(k)
    raise PipelineError(f"a dict input with keys {sorted(x)} holds no tensor")


def primary(x: Any) -> Tensor:
    """The content tensor of inputs ``x``: itself, the first of a tuple, or PRIMARY_KEYS."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, Mapping):
        return x[primary_key(x)]  # type: ignore[no-any-return]
    if isinstance(x, tuple) and x and isinstance(x[0], Tensor):
        return x[0]
    raise PipelineError(f"inputs of type {type(x).__name__} hold no tensor")


def replace_primary(x: Any, t: Tensor) -> Any:
    """Inputs ``x`` with their content tensor replaced by ``t``."""
    if isinstance(x, Tensor):
        return t
    if isinstance(x, Mapping):
        return {**x, primary_key(x): t}
    return (t, *x[1:])


def slice_inputs(x: Any, idx: slice | Tensor) -> Any:
    """Rows ``idx`` of every batched tensor in ``x`` (non-batched values kept as they are)."""
    if isinstance(x, Tensor):
        return x[idx]
    if isinstance(x, Mapping):
        return {k: slice_inputs(v, idx) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(slice_inputs(v, idx) for v in x)
    return x


def valid_targets(y: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Bool mask of target positions that carry a target."""
    if y.is_floating_point():
        return torch.ones_like(y, dtype=torch.bool)
    return y != ignore_index
