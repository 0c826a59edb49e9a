"""trackcheck inside the Hugging Face Trainer: one callback, the Trainer's own compute_loss,
optimizer settings, datasets and collator; a failed gate stops ``train()``. A BERT built from
a config (nothing downloaded) on marker sequences (tests/helpers/hf_models.py), CPU.

The clean Trainer on seeds 1 and 2 runs only when asked for:
``python -m pytest -m slow tests/test_hf_trainer.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

import helpers.hf_models as H  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import Trainer, TrainingArguments  # noqa: E402

from trackcheck import Report, Status  # noqa: E402
from trackcheck.integrations.hf import (  # noqa: E402
    SanityCheckFailed,
    TrackcheckCallback,
    check_trainer,
)

BAD = (Status.FAIL, Status.ERROR)
CLASSES = 4


class WeightedTrainer(Trainer):
    """A user's class-weighted cross-entropy, as the Trainer docs show compute_loss
    overridden (labels popped from the inputs, the logits read from the outputs)."""

    weights = torch.tensor([1.0, 2.0, 1.0, 0.5])

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any
    ) -> Any:
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.loss_of(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss

    def loss_of(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, weight=self.weights.to(logits.device))


class SoftmaxTrainer(WeightedTrainer):
    """Planted bug: probabilities into the cross-entropy."""

    def loss_of(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return super().loss_of(logits.softmax(-1), labels)


class SummedTrainer(WeightedTrainer):
    """Planted bug: the loss summed over the batch."""

    def loss_of(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, reduction="sum")


def make_trainer(cls: type, tmp_path: Path, callbacks: Any = None, **args: Any) -> Trainer:
    data = H.marker_sequences(classes=CLASSES)
    targs = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        weight_decay=0.01,
        max_steps=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        **args,
    )
    return cls(
        model=H.bert_classifier(classes=CLASSES),
        args=targs,
        train_dataset=data.train,
        eval_dataset=data.test,
        callbacks=callbacks,
    )


def check(cls: type, tmp_path: Path, checks: Any = "all", seed: int = 0) -> Report:
    return check_trainer(
        make_trainer(cls, tmp_path), checks=checks, seed=seed, tracker=None, progress=False
    )


def assert_clean(report: Report) -> None:
    bad = [c for c in report.checks if c.status in BAD]
    assert not bad, "\n".join(f"{c.name} {c.status}: {c.message}" for c in bad)
    assert report.passed


# --- correct Trainers pass -------------------------------------------------------------------
def test_trainer_with_a_class_weighted_compute_loss_passes_the_checklist(tmp_path: Path) -> None:
    report = check(WeightedTrainer, tmp_path)
    assert_clean(report)
    assert "training step" in report["contract"].message


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_weighted_trainer_passes_on_other_seeds(tmp_path: Path, seed: int) -> None:
    assert_clean(check(WeightedTrainer, tmp_path, seed=seed))


def test_default_trainer_trains_on_the_models_own_loss(tmp_path: Path) -> None:
    assert_clean(check(Trainer, tmp_path, checks=["contract", "overfit_batch"]))


def test_the_checks_train_through_the_trainers_compute_loss(tmp_path: Path) -> None:
    calls: list[int] = []

    class Counting(WeightedTrainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], **kwargs: Any) -> Any:
            calls.append(len(inputs["labels"]))
            return super().compute_loss(model, inputs, **kwargs)

    check(Counting, tmp_path, checks=["overfit_batch"])
    assert len(calls) > 20  # every step of overfit_batch, and the loss read per batch


def test_the_optimizer_is_the_trainers_with_its_weight_decay_groups(tmp_path: Path) -> None:
    from trackcheck.integrations.hf import build_stage

    stage = build_stage(make_trainer(WeightedTrainer, tmp_path, optim="sgd"))
    model = stage["model"]()
    opt = stage["optimizer"](model.parameters())
    assert isinstance(opt, torch.optim.SGD)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert opt.param_groups[0]["lr"] == 3e-3


# --- planted bugs in compute_loss ------------------------------------------------------------
def test_softmax_before_cross_entropy_in_compute_loss_fails_the_contract(tmp_path: Path) -> None:
    r = check(SoftmaxTrainer, tmp_path, checks=["contract"])["contract"]
    assert r.status == Status.FAIL
    assert "levels off" in r.message and "softmax" in r.message


def test_summed_loss_in_compute_loss_is_named_and_excused_by_the_trainers_clipping(
    tmp_path: Path,
) -> None:
    # a sum over the batch scales the gradient with the batch size, but the Trainer clips
    # it (max_grad_norm 1.0 by default) before the optimizer steps: a choice, named
    r = check(SummedTrainer, tmp_path, checks=["contract"])["contract"]
    assert r.status == Status.PASS
    assert "the loss grows with the batch" in r.message.lower() and "clipping" in r.message


# --- the callback in trainer.train() ------------------------------------------------------
def test_failed_gate_stops_train_before_the_first_step(tmp_path: Path) -> None:
    cb = TrackcheckCallback(checks=["contract"], progress=False)
    trainer = make_trainer(SoftmaxTrainer, tmp_path, callbacks=[cb])
    with pytest.raises(SanityCheckFailed) as e:
        trainer.train()
    assert e.value.code == 2  # the CLI's code for a broken contract
    assert str(tmp_path / "trackcheck" / "report.json") in str(e.value)
    assert trainer.state.global_step == 0


def test_passing_gate_lets_train_run(tmp_path: Path) -> None:
    cb = TrackcheckCallback(checks=["contract"], progress=False)
    trainer = make_trainer(WeightedTrainer, tmp_path, callbacks=[cb])
    trainer.train()
    assert cb.report is not None and cb.report.passed
    assert trainer.state.global_step == 2
