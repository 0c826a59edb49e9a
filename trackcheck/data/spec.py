"""DataSpec: the data a check sees, with the loaders training would use."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from trackcheck.core import ConfigError
from trackcheck.pipeline import Pipeline
from trackcheck.tasks import Task, make_task

KINDS = ("image", "tabular", "tokens")
# the fewest training examples the checklist can use: the contract compares a batch's loss
# with its two halves', overfit_batch fits "as little as two" (Karpathy)
MIN_TRAIN_EXAMPLES = 2


def length_of(obj: Any) -> int | None:
    """``len(obj)``, or None for a dataset (an IterableDataset) or loader without one."""
    try:
        return len(obj)
    except TypeError:
        return None


@dataclass
class DataSpec:
    """Train and test datasets plus what trackcheck needs to know about them.

    ``train_loader_fn``/``test_loader_fn`` let a user hand over their own loaders (custom
    samplers, collate functions, workers); otherwise trackcheck builds plain DataLoaders.
    """

    train: Dataset[Any]
    test: Dataset[Any]
    task: Task
    kind: str = "tabular"  # image | tabular | tokens: how input_snapshot decodes inputs
    batch_size: int = 64
    collate_fn: Callable[..., Any] | None = None
    class_names: list[str] | None = None
    itos: list[str] | None = None  # token id -> string, for decoding text
    feature_names: list[str] | None = None
    # a second annotation of the test set (same order as ``test``), for human_baseline
    human_labels: Tensor | None = None
    train_loader_fn: Callable[..., DataLoader[Any]] | None = None
    test_loader_fn: Callable[..., DataLoader[Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"data kind {self.kind!r} unknown: use one of {', '.join(KINDS)}")
        b = self.batch_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"data.batch_size={b!r}: expected a positive integer, e.g. 64")

    def validate(self) -> None:
        """ConfigError for data no check can use: an empty split or a single training
        example (said here, not as a ZeroDivisionError deep inside a check)."""
        for split, ds in (("train", self.train), ("test", self.test)):
            if length_of(ds) == 0:
                raise ConfigError(
                    f"data: the {split} set is empty (0 examples): check the dataset's path, "
                    "split and filters"
                )
        n = length_of(self.train)
        if n is not None and n < MIN_TRAIN_EXAMPLES:
            raise ConfigError(
                f"data: the training set has {n} example; the checklist needs at least "
                f"{MIN_TRAIN_EXAMPLES} (a batch and its two halves): give it more data"
            )

    def train_loader(
        self, generator: torch.Generator | None = None, batch_size: int | None = None
    ) -> DataLoader[Any]:
        """The training loader, shuffled by ``generator`` (so a seed fixes the batch order)."""
        if self.train_loader_fn is not None:
            return self.train_loader_fn(
                generator=generator, batch_size=batch_size or self.batch_size
            )
        return DataLoader(
            self.train,
            batch_size=batch_size or self.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=self.collate_fn,
        )

    def test_loader(self, batch_size: int | None = None) -> DataLoader[Any]:
        """The evaluation loader: in order, every example once (full_eval verifies that)."""
        if self.test_loader_fn is not None:
            return self.test_loader_fn(batch_size=batch_size or self.batch_size)
        return DataLoader(
            self.test,
            batch_size=batch_size or self.batch_size,
            shuffle=False,
            collate_fn=self.collate_fn,
        )

    def head(self, split: str, n: int) -> Any:
        """The first ``n`` examples of a split, collated as one batch, in dataset order."""
        ds = self.train if split == "train" else self.test
        n = min(n, len(ds))  # type: ignore[arg-type]
        loader = DataLoader(ds, batch_size=n, shuffle=False, collate_fn=self.collate_fn)
        return next(iter(loader))

    def targets(
        self, split: str = "train", limit: int = 20000, pipeline: Pipeline | None = None
    ) -> Tensor:
        """All targets of a split (at most ``limit``), read through ``pipeline`` (default
        conventions when None), for priors and label entropies."""
        ds = self.train if split == "train" else self.test
        tensors = getattr(ds, "tensors", None)
        if tensors is not None and len(tensors) == 2:  # TensorDataset(x, y): no pass needed
            return tensors[1][:limit]  # type: ignore[no-any-return]
        # a copy: the caller's pipeline is not told which task this is as a side effect
        pipe = dataclasses.replace(pipeline or Pipeline(), task_name=self.task.name)
        ys: list[Tensor] = []
        seen = 0
        for batch in DataLoader(ds, batch_size=512, shuffle=False, collate_fn=self.collate_fn):
            ys.append(pipe.split(batch).y)
            seen += len(ys[-1])
            if seen >= limit:
                break
        return torch.cat(ys)[:limit]

    def prior_bias(self, pipeline: Pipeline | None = None) -> list[float]:
        """The final-layer bias that makes a model predict the train-set prior at init (the
        log class frequencies, centred; the logit of the positive rate; the target mean):
        what ``out_bias: auto`` puts in the shipped models, for your own model too::

            model.head.bias.data = torch.tensor(data.prior_bias())
        """
        prior = self.task.prior(self.targets(pipeline=pipeline))
        return [float(v) for v in self.task.prior_bias(prior).reshape(-1)]


def from_datasets(
    train: Dataset[Any],
    test: Dataset[Any],
    task: str,
    num_outputs: int = 1,
    kind: str = "tabular",
    batch_size: int = 64,
    input_shape: Sequence[int] | None = None,
    class_names: list[str] | None = None,
    human_labels: Any = None,
    train_loader: Callable[..., DataLoader[Any]] | None = None,
    test_loader: Callable[..., DataLoader[Any]] | None = None,
    collate_fn: Callable[..., Any] | None = None,
) -> DataSpec:
    """Wrap a user's own datasets (any ``torch.utils.data.Dataset`` yielding ``(x, y)``).

    In a Hydra config::

        data:
          _target_: trackcheck.data.from_datasets
          train: {_target_: my_pkg.MyDataset, split: train}
          test: {_target_: my_pkg.MyDataset, split: test}
          task: multiclass
          num_outputs: 10
    """
    hl = None if human_labels is None else torch.as_tensor(human_labels)
    return DataSpec(
        train=train,
        test=test,
        task=make_task(task, num_outputs),
        kind=kind,
        batch_size=batch_size,
        collate_fn=collate_fn,
        class_names=class_names,
        human_labels=hl,
        train_loader_fn=train_loader,
        test_loader_fn=test_loader,
        info={"input_shape": list(input_shape) if input_shape else None},
    )
