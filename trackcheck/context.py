"""The Context a check runs in: fresh models, seeded randomness, data, device, optimizer,
and the seam to the user's pipeline (``split``, ``forward``, ``loss``, ``train_step``).

Checks take everything from here and nothing from globals, so they work the same from the
Hydra entry point, a notebook or a pytest test; and they never call ``model(x)`` or a loss
themselves, so dict batches, ``ModelOutput``s and the user's own loss and step reach every
check through one place (:mod:`trackcheck.pipeline`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trackcheck import losses
from trackcheck.core import CheckResult
from trackcheck.data.spec import DataSpec
from trackcheck.pipeline import Batch, Pipeline, PipelineError, model_loss_of
from trackcheck.tasks import Prior, Task
from trackcheck.tasks import detect as detect_task

ModelFactory = Callable[[], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def _functorch_wrapped(t: Tensor) -> bool:
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


def seed_everything(seed: int) -> None:
    """Seed every source trackcheck knows of: Python, NumPy's global RNG, torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Meter:
    """Counts the root model's forward and backward passes and the time spent in the model:
    its forward, the backward, the optimizer step of a training step (``step``), and the
    backward passes torch.func runs (``measure``, e.g. the vmapped VJPs of the dependency
    maps).

    The benchmark reads it to split a check's time into "inside the model" and "overhead".
    Regions nest (a user's training step contains a forward): only the outermost is timed.
    On CUDA the timers synchronise, so the split is true wall time there as well.
    """

    def __init__(self) -> None:
        self.n_forward = 0
        self.n_backward = 0
        self.model_s = 0.0
        self._t0 = 0.0
        self._depth = 0  # open timed regions
        self.sync = False  # set by the runner on CUDA: each timer waits for ``device``
        self.device: torch.device | None = None
        # wall time to add to the current check's own (negative: work done during it that
        # belongs to the stage's shared row; positive: its share done during another check)
        self.shift_s = 0.0
        # work computed once per stage for several checks, not in any check's count: row ->
        # {"runs", "steps", "fwd", "bwd", "model_s", "time_s"} (checks/_shared/_run.py)
        self.shared: dict[str, dict[str, float]] = {}

    def reset(self) -> None:
        """Zero the current check's counts (the stage's shared rows are kept)."""
        self.n_forward = self.n_backward = 0
        self.model_s = self.shift_s = 0.0
        self._depth = 0

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize(self.device)  # the stage's GPU, not the current one
        return time.perf_counter()

    def _enter(self) -> None:
        if self._depth == 0:
            self._t0 = self._now()
        self._depth += 1

    def _exit(self) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            self.model_s += self._now() - self._t0

    @contextmanager
    def measure(self, backward: int = 0) -> Iterator[None]:
        """Time the block as model time; ``backward``: the backward passes it runs."""
        self._enter()
        try:
            yield
        finally:
            self._exit()
            self.n_backward += backward

    def attach(self, model: nn.Module) -> nn.Module:
        def pre(_m: nn.Module, _args: Any) -> None:
            self._enter()

        def post(_m: nn.Module, _args: Any, _out: Any) -> None:
            self._exit()
            self.n_forward += 1

        model.register_forward_pre_hook(pre)
        model.register_forward_hook(post, always_call=True)  # a raising forward closes too
        return model

    def backward(self, loss: Tensor, **kwargs: Any) -> None:
        with self.measure(backward=1):
            loss.backward(**kwargs)


@dataclass
class Context:
    model_factory: ModelFactory
    data: DataSpec
    optimizer_factory: OptimizerFactory
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    bigger_model_factory: ModelFactory | None = None
    # a user's loop-based reference implementation, for vectorized_equivalence
    reference_fn: Callable[..., Tensor] | None = None
    output_dir: Path | None = None
    meter: Meter = field(default_factory=Meter)
    pipeline: Pipeline = field(default_factory=Pipeline)
    # the model factory loads trained weights (a checkpoint, a pretrained backbone): True,
    # False, or None to detect it (checks/_shared/_pretrained.py): the init checks then judge what
    # is meaningful for a checkpoint, the training checks the user's lr on those weights
    pretrained: bool | None = None
    # the results of the checks that ran before this one, in order (set by the runner), so a
    # diagnostic check can run only when an earlier one failed
    finished: list[CheckResult] = field(default_factory=list, repr=False)
    # why the configured task was read as another (tasks.detect), "" when it was not
    task_note: str = field(default="", init=False)
    # the stage's checks and their params (set by the runner), so work shared by several
    # checks (the shared training run, checks/_shared/_run.py) serves the ones still to come
    stage: dict[str, Any] = field(default_factory=dict, repr=False)
    _targets: dict[tuple[str, int], Tensor] = field(default_factory=dict, repr=False)
    # what several checks compute alike, computed once per stage (checks/_shared/_common.py: the
    # outputs at init that loss_at_init and init_bias both judge)
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    # non-finite losses seen (read and cleared after each check: checks/_shared/_nonfinite.py): the
    # first training batch whose loss was, and a device flag "all losses finite" (no sync)
    _nonfinite_batch: Batch | None = field(default=None, repr=False)
    _losses_finite: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # task lm on a tagger's data (tags, not next tokens) is token classification
        task, self.task_note = detect_task(self.data.task, self.data, self.pipeline)
        if task is not self.data.task:
            self.data = dataclasses.replace(self.data, task=task)
        self.pipeline.task_name = self.data.task.name

    @property
    def task(self) -> Task:
        return self.data.task

    def new_model(self, bigger: bool = False, seed: int | None = None) -> nn.Module:
        """A freshly initialised model on the device, its init fixed by the seed."""
        factory = self.bigger_model_factory if bigger else self.model_factory
        if factory is None:
            raise ValueError("no bigger model configured")
        seed_everything(self.seed if seed is None else seed)
        model = factory()
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"the model factory returned {type(model).__name__}, not a torch.nn.Module: "
                "give a class or a callable that builds the model (Hydra: _partial_: true)"
            )
        return self.meter.attach(model.to(self.device))

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return self.optimizer_factory(model.parameters())

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the stage seed (offset it for independent streams)."""
        return torch.Generator().manual_seed(self.seed + offset)

    def to_device(self, batch: Any) -> Any:
        if isinstance(batch, Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, Batch):
            return Batch(self.to_device(batch.x), self.to_device(batch.y), batch.raw)
        if isinstance(batch, list | tuple):
            return type(batch)(self.to_device(b) for b in batch)
        if isinstance(batch, Mapping):
            return {k: self.to_device(v) for k, v in batch.items()}
        return batch

    # --- the seam: every check reaches the model and the loss through these ----------------
    def split(self, batch: Any) -> Batch:
        """A loader's batch, on the device, split into inputs and aligned target."""
        return self.pipeline.split(self.to_device(batch))

    def forward(self, model: nn.Module, x: Any) -> Tensor:
        """The model's prediction tensor for inputs ``x`` (logits for classification)."""
        return self.pipeline.forward(model, x)

    def per_example_loss(self, out: Tensor, y: Tensor) -> Tensor:
        """[B] the loss training uses, per example (the task's, or the user's via vmap)."""
        fn = self.pipeline.loss
        if callable(fn) and self.pipeline.takes_whole:  # each example with its own mu, logvar
            parts, of_parts = self.pipeline.per_example_parts(fn, out)
            return self._watch(losses.per_example(of_parts, parts, y))
        if callable(fn):
            return self._watch(losses.per_example(fn, out, y))
        return self._watch(self.task.per_example_loss(out, y))

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The scalar loss training backpropagates (the task's, or the user's)."""
        if callable(self.pipeline.loss):  # under loss_takes: whole, on the whole output
            return self._watch(losses.scalar_loss(self.pipeline.user_loss(), out, y))
        return self._watch(self.task.loss(out, y))

    def batch_loss(self, model: nn.Module, b: Batch) -> tuple[Tensor, Tensor]:
        """(scalar loss, prediction) for one batch, as the training loop computes them: a
        model that computes its own loss (``loss: model``) is given the targets."""
        if self.pipeline.model_loss:
            raw = self.pipeline.call_with_targets(model, b.x, b.y)
            loss = model_loss_of(raw)
            if loss is None:
                raise PipelineError(
                    f"loss: model, but the model's output ({type(raw).__name__}) has no .loss "
                    "when given its targets: use the task's loss (leave loss unset) or your own"
                )
            return self._watch(loss), self.pipeline.prediction(raw, b.x)
        out = self.forward(model, b.x)
        return self.loss(out, b.y), out

    def train_step(self, model: nn.Module, b: Batch, opt: torch.optim.Optimizer) -> float:
        """One optimizer step on batch ``b``; the training loss before the step."""
        step = self.pipeline.step
        if step is not None:
            with self.meter.measure(backward=1):  # the user's step: forward, backward, step
                v = step(model, self.pipeline.model_layout(b.raw), opt)
            return self._note_step(float(v.detach() if isinstance(v, Tensor) else v), b)
        opt.zero_grad(set_to_none=True)
        loss, _ = self.batch_loss(model, b)
        self.meter.backward(loss)
        with self.meter.measure():  # the optimizer's update is the model's work too
            opt.step()
        return self._note_step(float(loss.detach()), b)

    # --- non-finite losses: noted here, located by checks/_shared/_nonfinite.py -------------
    def _watch(self, loss: Tensor) -> Tensor:
        """``loss``, noted in the "all finite" flag: one isfinite on the device, no sync
        (tensors inside torch.func transforms are left alone)."""
        if isinstance(loss, Tensor) and not _functorch_wrapped(loss):
            ok = torch.isfinite(loss.detach()).all()
            prev = self._losses_finite
            self._losses_finite = ok if prev is None else prev & ok.to(prev.device)
        return loss

    def _note_step(self, v: float, b: Batch) -> float:
        if not math.isfinite(v) and self._nonfinite_batch is None:
            self._nonfinite_batch = b
        return v

    def note_nonfinite(self, batch: Batch | None) -> None:
        """Note a non-finite loss seen on the current check's behalf (in work shared with
        other checks), with the first training batch whose loss was, if known."""
        self._losses_finite = torch.tensor(False)
        if batch is not None and self._nonfinite_batch is None:
            self._nonfinite_batch = batch

    def take_nonfinite(self) -> tuple[bool, Batch | None]:
        """(a non-finite loss was seen since the last call, the first training batch whose
        loss was); clears both."""
        flag, b = self._losses_finite, self._nonfinite_batch
        self._losses_finite = self._nonfinite_batch = None
        return b is not None or (flag is not None and not bool(flag)), b

    # --- data -------------------------------------------------------------------------------
    def train_batches(self, seed_offset: int = 0, batch_size: int | None = None) -> Iterator[Batch]:
        """Endless training batches, shuffled by a seeded generator, on the device, split."""
        g = self.generator(seed_offset)
        while True:
            loader = self.data.train_loader(generator=g, batch_size=batch_size)
            empty = True
            for batch in loader:
                empty = False
                yield self.split(batch)
            if empty:
                raise ValueError("the training loader yielded no batch: is the training set empty?")

    def batches(self, loader: Iterable[Any]) -> Iterator[Batch]:
        """The batches of any loader, on the device, split."""
        for batch in loader:
            yield self.split(batch)

    def head(self, split: str, n: int) -> Batch:
        """The first ``n`` examples of a split as one batch, in dataset order."""
        return self.split(self.data.head(split, n))

    def targets(self, split: str = "train", limit: int = 20000) -> Tensor:
        """All targets of a split (at most ``limit``, CPU), aligned as the checks see them;
        read once per stage (a pass over a large dict dataset is not free)."""
        key = (split, limit)
        if key not in self._targets:
            self._targets[key] = self.data.targets(split, limit, self.pipeline)
        return self._targets[key]

    @cached_property
    def prior(self) -> Prior:
        return self.task.prior(self.targets("train"))
