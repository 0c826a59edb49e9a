"""Where a NaN or Inf starts: the data, the first module whose forward output turns
non-finite, the loss, or the first module in backward order whose input gradient does.

``locate`` replays one batch through a fresh model with hooks on every module. The Context
notes every non-finite loss it sees (``Context.take_nonfinite``: one ``isfinite`` on the
scalar loss, no sync); after each check the runner calls ``annotate``, which locates the
origin on the batch the loss went non-finite on and appends it to the check's message.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trackcheck.checks._shared import _streams
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import Batch

# where the first non-finite value was found, as a metric (sanity/<check>/nonfinite_stage)
STAGES = ("none", "data", "target", "forward", "loss", "backward", "not reproduced", "gradient")


@dataclass
class Origin:
    stage: str  # one of STAGES
    module: str = ""  # the module's qualified name (forward, backward), the input key (data)
    kind: str = ""  # what the module is (its class), for the message
    example: int | None = None  # the example's index in the batch
    value: str = ""  # "NaN", "+Inf" or "-Inf"

    @property
    def found(self) -> bool:
        return self.stage not in ("none", "not reproduced")

    def describe(self) -> str:
        at = f" at example {self.example} of the batch" if self.example is not None else ""
        what = f"{self.module} ({self.kind})" if self.kind else self.module
        if self.stage == "data":
            return (
                f"the input {self.module} holds {self.value}{at} (the data, not the "
                "model): clean or filter that example"
            )
        if self.stage == "target":
            return f"the target holds {self.value}{at} (the data): clean or filter that example"
        if self.stage == "forward":
            return (
                f"{self.value} first appears in the forward output of {what}{at}: a log "
                "or sqrt of a negative value, a division by zero, or an overflow there"
            )
        if self.stage == "loss":
            return (
                f"the model's output is finite but the loss is {self.value}{at}: a log "
                "of 0 in the loss, or targets out of its range"
            )
        if self.stage == "backward":
            return (
                f"forward and loss are finite; {self.value} first appears in backward, in "
                f"the input gradient of {what}{at}: a sqrt/norm/pow at 0 or a division "
                "by a value near 0 there (add an eps)"
            )
        if self.stage == "gradient":
            return (
                f"forward and loss are finite; {self.value} is in the gradient of the "
                f"parameters of {what}: it starts there or in a module after it in forward "
                "(a sqrt/norm/pow at 0 or a division by a value near 0: add an eps)"
            )
        if self.stage == "not reproduced":
            return (
                "the batch replayed is finite through a freshly initialised model: the "
                "values diverged during training (lower the learning rate, clip gradients), "
                "or the non-finite examples are in other batches"
            )
        return "every value is finite"

    def metrics(self) -> dict[str, float]:
        m = {"nonfinite_stage": float(STAGES.index(self.stage))}
        if self.example is not None:
            m["nonfinite_example"] = float(self.example)
        return m


def tensors(obj: Any) -> Iterator[Tensor]:
    """The floating tensors in a module's output (tuples, dicts, ModelOutputs), without a
    loss it carries (the loss stage judges that)."""
    if isinstance(obj, Tensor):
        if obj.is_floating_point() or obj.is_complex():
            yield obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            if k != "loss":
                yield from tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from tensors(v)


def first_bad(obj: Any) -> Tensor | None:
    return next((t for t in tensors(obj) if not bool(torch.isfinite(t.detach()).all())), None)


def value_of(t: Tensor) -> str:
    t = t.detach()
    if bool(torch.isnan(t).any()):
        return "NaN"
    return "+Inf" if bool((t == float("inf")).any()) else "-Inf"


def example_of(t: Tensor, n: int) -> int | None:
    """The first example (index along the batch axis, the first axis of size ``n``) with a
    non-finite value in ``t``; None when no axis has the batch's size."""
    axis = next((d for d, s in enumerate(t.shape) if s == n), None)
    if axis is None:
        return None
    rows = (~torch.isfinite(t.detach().movedim(axis, 0))).reshape(n, -1).any(1)
    return int(rows.nonzero()[0, 0]) if bool(rows.any()) else None


def data_origin(b: Batch) -> Origin | None:
    """Non-finite values in the batch's floating inputs or targets, or None."""
    x = b.x
    named = (
        x.items()
        if isinstance(x, Mapping)
        else enumerate(x)
        if isinstance(x, tuple)
        else [("inputs", x)]
    )
    n = len(b)
    for key, t in named:
        bad = first_bad(t) if isinstance(t, Tensor) else None
        if bad is not None:
            name = key if isinstance(key, str) else f"inputs[{key}]"
            return Origin("data", name, example=example_of(bad, n), value=value_of(bad))
    bad = first_bad(b.y)
    if bad is not None:
        return Origin("target", "target", example=example_of(bad, n), value=value_of(bad))
    return None


@contextmanager
def _hooks(model: nn.Module, n: int, found: list[Origin], backward: bool) -> Iterator[None]:
    """Hooks on every module: forward, the first module (in the order modules finish, so
    the innermost) whose output holds a non-finite value; backward (``backward``), the first
    in backward order whose gradient w.r.t. its output is finite and w.r.t. its input is
    not. Each goes into ``found``."""
    names = {m: name or f"{type(m).__name__}.forward" for name, m in model.named_modules()}

    def fwd(m: nn.Module, _args: Any, out: Any) -> None:
        bad = None if found else first_bad(out)
        if bad is not None:
            found.append(
                Origin("forward", names[m], type(m).__name__, example_of(bad, n), value_of(bad))
            )

    def bwd(m: nn.Module, grad_in: Any, grad_out: Any) -> None:
        bad = None if found else first_bad(grad_in)
        if bad is not None and first_bad(grad_out) is None:
            found.append(
                Origin("backward", names[m], type(m).__name__, example_of(bad, n), value_of(bad))
            )

    handles = [m.register_forward_hook(fwd) for m in names]
    if backward:
        handles += [m.register_full_backward_hook(bwd) for m in names]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def locate(ctx: Context, b: Batch) -> Origin:
    """The first non-finite value of batch ``b`` through a fresh model (train mode, as
    training sees it): in the data, a module's forward output, the loss, or backward."""
    data = data_origin(b)
    if data is not None:
        return data
    origin = _replay(ctx, b, backward_hooks=False)  # backward: the parameters' gradients
    if origin.stage != "gradient":
        return origin
    # a non-finite gradient: again with a hook on every module in backward, to name where
    # it starts (costly hooks, so only now). A model that edits a hooked output in place
    # (ReLU(inplace=True) after a conv) cannot take them: the parameter's module stands
    try:
        precise = _replay(ctx, b, backward_hooks=True)
    except RuntimeError as e:
        if "inplace" not in str(e) and "in-place" not in str(e) and "view" not in str(e):
            raise
        return origin
    return precise if precise.stage == "backward" else origin


def _replay(ctx: Context, b: Batch, backward_hooks: bool) -> Origin:
    model = ctx.new_model()
    model.train()
    found: list[Origin] = []
    with _hooks(model, len(b), found, backward_hooks), warnings.catch_warnings():
        # full backward hooks warn on outputs they cannot wrap (a ModelOutput): the hooks
        # inside the model still fire, and those are the ones that name a module
        warnings.filterwarnings("ignore", message=".*backward hooks to be called.*")
        loss, out = ctx.batch_loss(model, b)
        if found:
            return found[0]
        if not bool(torch.isfinite(loss.detach()).all()):
            return _loss_origin(ctx, out, b, loss)
        if not loss.requires_grad:
            return Origin("none")
        with warnings.catch_warnings():  # "firing ... since no inputs require gradients": meant
            warnings.simplefilter("ignore", UserWarning)
            loss.backward()
    return found[0] if found else _param_origin(model)


@torch.no_grad()
def _loss_origin(ctx: Context, out: Tensor, b: Batch, loss: Tensor) -> Origin:
    example = None
    try:  # the task's (or the user's) per-example loss: which example is non-finite
        example = example_of(ctx.per_example_loss(out, b.y), len(b))
    except Exception:  # noqa: BLE001 - a loss vmap cannot batch: no example index then
        pass
    return Origin("loss", "loss", example=example, value=value_of(loss))


def _param_origin(model: nn.Module) -> Origin:
    """The module of the last parameter (closest to the loss, nearly backward order) with a
    non-finite gradient; 'none' when every gradient is finite."""
    named = [(n, q.grad) for n, q in model.named_parameters() if q.grad is not None]
    ok = torch.stack([torch.isfinite(g).all() for _, g in named]) if named else None
    if ok is None or bool(ok.all()):  # one sync for all of them
        return Origin("none")
    owner = {
        n: name
        for name, m in model.named_modules()
        for n, _ in m.named_parameters(prefix=name, recurse=False)
    }
    for name, g in reversed(named):
        if not bool(torch.isfinite(g).all()):
            mod = owner.get(name, "")
            kind = type(model.get_submodule(mod)).__name__
            return Origin("gradient", mod or name, kind, None, value_of(g))
    return Origin("none")


def scan(ctx: Context, max_batches: int = 16) -> Origin:
    """A non-finite loss was seen without a training batch to blame: the inputs of up to
    ``max_batches`` training batches are scanned (no model), then the first is replayed."""
    batches = ctx.train_batches(seed_offset=_streams.FINITE)
    first = next(batches)
    origin, b, seen = data_origin(first), first, len(first)
    try:
        n_train = len(ctx.data.train)  # type: ignore[arg-type]
    except TypeError:  # an iterable dataset: up to max_batches
        n_train = max_batches * len(first)
    while origin is None and seen < n_train and seen < max_batches * len(first):
        b = next(batches)
        origin, seen = data_origin(b), seen + len(b)
    return origin if origin is not None else locate(ctx, first)


def annotate(ctx: Context, result: CheckResult) -> None:
    """After a check that did not pass: when it saw a non-finite loss, the origin goes into
    its message and metrics (located on a fresh model; the Context's note is cleared
    either way)."""
    seen, b = ctx.take_nonfinite()
    # a check that passed tolerated it (lr_range drives the loss to divergence on purpose)
    if not seen or result.status in (Status.SKIP, Status.PASS):
        return
    try:
        origin = locate(ctx, b) if b is not None else scan(ctx)
        if not origin.found:
            origin = Origin("not reproduced")
    except Exception as e:  # noqa: BLE001 - a failed diagnosis must not hide the result
        result.message += f"; a non-finite loss was seen (its origin could not be located: {e})"
        return
    finally:
        ctx.take_nonfinite()  # the replay's own losses
    result.message += f"; non-finite loss: {origin.describe()}"
    result.metrics.update(origin.metrics())
