"""The Context a check runs in: fresh models, seeded randomness, data, device, optimizer,
and the seam to the user's pipeline (``split``, ``forward``, ``loss``, ``train_step``).

Checks take everything from here and nothing from globals, so they work the same from the
Hydra entry point, a notebook or a pytest test; and they never call ``model(x)`` or a loss
themselves, so dict batches, ``ModelOutput``s and the user's own loss and step reach every
check through one place (:mod:`trackcheck.pipeline`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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
from trackcheck.pipeline import Batch, Pipeline, PipelineError
from trackcheck.tasks import Prior, Task

ModelFactory = Callable[[], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]




def seed_everything(seed: int) -> None:
    """Seed every source trackcheck knows of: Python, NumPy's global RNG, torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Meter:
    """Counts the root model's forward and backward passes and the time spent in them.

    The benchmark reads it to split a check's time into "inside the model" and "overhead".
    On CUDA the timers synchronise, so the split is true wall time there as well.
    """

    def __init__(self) -> None:
        self.n_forward = 0
        self.n_backward = 0
        self.model_s = 0.0
        self._t0: float | None = None
        self.sync = False

    def reset(self) -> None:
        self.n_forward = self.n_backward = 0
        self.model_s = 0.0

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def attach(self, model: nn.Module) -> nn.Module:
        def pre(_m: nn.Module, _args: Any) -> None:
            self._t0 = self._now()

        def post(_m: nn.Module, _args: Any, _out: Any) -> None:
            if self._t0 is not None:
                self.model_s += self._now() - self._t0
                self._t0 = None
            self.n_forward += 1

        model.register_forward_pre_hook(pre)
        model.register_forward_hook(post)
        return model

    def backward(self, loss: Tensor, **kwargs: Any) -> None:
        t0 = self._now()
        loss.backward(**kwargs)
        self.model_s += self._now() - t0
        self.n_backward += 1


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
    # the results of the checks that ran before this one, in order (set by the runner), so a
    # diagnostic check can run only when an earlier one failed
    finished: list[CheckResult] = field(default_factory=list, repr=False)
    _targets: dict[tuple[str, int], Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
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
        if callable(fn):
            return losses.per_example(fn, out, y)
        return self.task.per_example_loss(out, y)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The scalar loss training backpropagates (the task's, or the user's)."""
        fn = self.pipeline.loss
        if callable(fn):
            return losses.scalar_loss(fn, out, y)
        return self.task.loss(out, y)

    def batch_loss(self, model: nn.Module, b: Batch) -> tuple[Tensor, Tensor]:
        """(scalar loss, prediction) for one batch, as the training loop computes them: a
        model that computes its own loss (``loss: model``) is given ``labels=``."""
        if self.pipeline.model_loss:
            raw = self.pipeline.call(model, b.x, labels=self.pipeline.labels_for_model(b.y))
            loss = getattr(raw, "loss", None)
            if loss is None and isinstance(raw, Mapping):
                loss = raw.get("loss")
            if not isinstance(loss, Tensor):
                raise PipelineError(
                    f"loss: model, but the model's output ({type(raw).__name__}) has no .loss "
                    "when given labels=: use the task's loss (leave loss unset) or your own"
                )
            return loss, self.pipeline.output(raw)
        out = self.forward(model, b.x)
        return self.loss(out, b.y), out

    def train_step(self, model: nn.Module, b: Batch, opt: torch.optim.Optimizer) -> float:
        """One optimizer step on batch ``b``; the training loss before the step."""
        step = self.pipeline.step
        if step is not None:
            v = step(model, b.raw, opt)
            return float(v.detach() if isinstance(v, Tensor) else v)
        opt.zero_grad(set_to_none=True)
        loss, _ = self.batch_loss(model, b)
        self.meter.backward(loss)
        opt.step()
        return float(loss.detach())

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
