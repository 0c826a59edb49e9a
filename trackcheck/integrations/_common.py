"""What the framework integrations share: the data a framework's loaders hold as a DataSpec,
the task read off the model's output, the owner of an optimizer's parameters, graphs left in
module state after a step, and the framework's loss seen as ``loss(output, target)``."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from trackcheck.core import ConfigError
from trackcheck.data.spec import DataSpec, length_of
from trackcheck.pipeline import Batch, Pipeline, primary, slice_inputs
from trackcheck.tasks import make_task

# the share of a training set held out for the checks that need unseen examples, when the
# framework has no validation loader (a tenth: the usual validation split)
HELD_OUT_SHARE = 0.1


# --- data ------------------------------------------------------------------------------------
def loader_spec(
    train: DataLoader[Any],
    val: DataLoader[Any] | None,
    task: str,
    num_outputs: int,
    kind: str,
) -> DataSpec:
    """The loaders' datasets, batch size and collate_fn as a DataSpec (trackcheck shuffles
    with its own seeded generator; workers and custom samplers are not carried over).
    Without a validation loader the last HELD_OUT_SHARE of the training set is held out."""
    train_ds: Dataset[Any] = train.dataset
    test_ds: Dataset[Any]
    if val is None:
        n = length_of(train_ds)
        if n is None or n < 4:
            raise ConfigError(
                "trackcheck needs a validation loader (val_dataloader / eval_dataset) for a "
                "training set without a length: give one"
            )
        cut = n - max(1, int(n * HELD_OUT_SHARE))
        train_ds, test_ds = Subset(train_ds, range(cut)), Subset(train_ds, range(cut, n))
    else:
        test_ds = val.dataset
    return DataSpec(
        train=train_ds,
        test=test_ds,
        task=make_task(task, num_outputs),
        kind=kind,
        batch_size=int(train.batch_size or 32),
        collate_fn=train.collate_fn,
    )


def infer_task(out: Tensor, y: Tensor) -> tuple[str, int]:
    """(task, num_outputs) from a model's output and the batch's target: integer targets and
    one more output axis -> multiclass over the last axis; {0, 1} targets shaped like a
    one-wide output -> binary; other float targets -> regression. ConfigError otherwise."""
    if not y.is_floating_point() and out.ndim == y.ndim + 1 and y.ndim == 1:
        return "multiclass", int(out.shape[-1])
    if out.numel() == y.numel():
        y01 = bool(((y == 0) | (y == 1)).all())
        if y01 and (out.ndim == 1 or out.shape[-1] == 1):
            return "binary", 1
        if y.is_floating_point():
            return "regression", 1
    raise ConfigError(
        f"trackcheck cannot tell the task from an output of shape {list(out.shape)} and "
        f"targets of shape {list(y.shape)} ({y.dtype}): pass task= (multiclass, binary, "
        "regression, lm) and num_outputs= to the callback"
    )


def infer_kind(x: Any) -> str:
    """How input_snapshot shows inputs: integer tensors are tokens, [B, C, H, W] images."""
    t = primary(x)
    if not t.is_floating_point():
        return "tokens"
    return "image" if t.ndim == 4 else "tabular"


# --- parameters -> the module that owns them ---------------------------------------------------
class Owners:
    """Which fresh model an optimizer factory's parameters belong to: trackcheck hands an
    optimizer factory ``model.parameters()``, and a framework builds its optimizer from the
    model (``configure_optimizers``, named weight-decay groups)."""

    def __init__(self) -> None:
        self._by_param: weakref.WeakValueDictionary[int, nn.Module] = weakref.WeakValueDictionary()

    def add(self, model: nn.Module) -> nn.Module:
        first = next(model.parameters(), None)
        if first is not None:
            self._by_param[id(first)] = model
        return model

    def find(self, params: list[nn.Parameter]) -> nn.Module | None:
        if not params:
            return None
        model = self._by_param.get(id(params[0]))
        if model is not None and next(model.parameters(), None) is params[0]:
            return model
        return None


# --- a step leaves no graph behind -------------------------------------------------------------
def release_graphs(model: nn.Module) -> None:
    """Detach every tensor (or list of tensors) a step left in module state with its autograd
    graph: torchmetrics' forward cache and states hold the batch's loss with its graph, which
    makes ``copy.deepcopy(model)`` fail ("Only Tensors created explicitly by the user")."""
    for m in model.modules():
        for k, v in list(vars(m).items()):
            if isinstance(v, Tensor) and v.grad_fn is not None:
                setattr(m, k, v.detach())
            elif isinstance(v, list) and any(
                isinstance(t, Tensor) and t.grad_fn is not None for t in v
            ):
                setattr(m, k, [t.detach() if isinstance(t, Tensor) else t for t in v])


def metrics_of(model: nn.Module) -> list[nn.Module]:
    """The torchmetrics metrics inside ``model`` (none when torchmetrics is absent)."""
    return [m for m in model.modules() if type(m).__module__.startswith("torchmetrics")]


def mute_metrics(model: nn.Module) -> None:
    """Metrics of a module used only to read its loss do nothing: updating them inside
    torch.func transforms fails, and their values are never read."""
    for m in metrics_of(model):
        for name in ("forward", "update", "compute", "reset"):
            object.__setattr__(m, name, _nothing)


def _nothing(*_args: Any, **_kwargs: Any) -> None:
    return None


# --- the framework's loss as loss(output, target) ---------------------------------------------
class InjectedOutput:
    """Stands in for a model's forward: returns ``value`` (set before each call), counting the
    calls, so a framework's step computes its loss from a given output."""

    def __init__(self, wrap: Callable[[Tensor], Any] = lambda t: t) -> None:
        self.value: Tensor | None = None
        self.calls = 0
        self.wrap = wrap

    def __call__(self, *_args: Any, **_kwargs: Any) -> Any:
        self.calls += 1
        assert self.value is not None
        return self.wrap(self.value)


def batch_like(pipe: Pipeline, template: Batch, y: Tensor, put_target: PutTarget) -> Any:
    """A raw batch of ``len(y)`` rows, its inputs the template's rows repeated, its target
    ``y``: what a framework's step is given to compute the loss of an injected output."""
    idx = torch.arange(len(y), device=y.device) % len(template)
    x = slice_inputs(template.x, idx.to(primary(template.x).device))
    return put_target(pipe.with_inputs(template, x).raw, y)


PutTarget = Callable[[Any, Tensor], Any]


def tuple_or_dict_target(target_key: str | None) -> PutTarget:
    """Puts a target into a raw batch: the last element of a tuple, or ``target_key`` of a
    dict."""

    def put(raw: Any, y: Tensor) -> Any:
        if isinstance(raw, Mapping):
            assert target_key is not None
            return {**raw, target_key: y}
        return [*raw[:-1], y]

    return put


def close_enough(a: Tensor, b: Tensor, rtol: float = 1e-4) -> bool:
    """The probe's agreement: the same loss computed two ways, to float32 rounding."""
    a, b = a.detach().double(), b.detach().double()
    return bool((a - b).abs() <= rtol * max(float(b.abs()), 1e-6))


def listed(x: Any) -> list[Any]:
    return list(x) if isinstance(x, Iterable) and not isinstance(x, Tensor | Mapping) else [x]
