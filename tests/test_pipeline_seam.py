"""The seam: how batches go in, what comes out, which loss is used, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import blobs
from torch import nn
from torch.utils.data import Dataset

import trackcheck
from trackcheck import ConfigError, Pipeline, PipelineError
from trackcheck.pipeline import shift_left
from trackcheck.tasks import make_task


def test_a_tuple_batch_is_inputs_then_target():
    x, y = torch.randn(4, 3), torch.arange(4)
    b = Pipeline().split((x, y))
    assert b.x is x and b.y is y


def test_a_longer_tuple_gives_the_model_every_input_but_the_last():
    b = Pipeline().split((torch.ones(2, 1), torch.zeros(2, 1), torch.tensor([0, 1])))
    assert isinstance(b.x, tuple) and len(b.x) == 2


def test_a_dict_batch_hands_every_key_but_labels_to_the_model():
    batch = {
        "input_ids": torch.ones(2, 5).long(),
        "attention_mask": torch.ones(2, 5).long(),
        "labels": torch.tensor([1, 0]),
    }
    b = Pipeline().split(batch)
    assert set(b.x) == {"input_ids", "attention_mask"}
    assert torch.equal(b.y, batch["labels"])


def test_lm_dict_labels_are_shifted_and_padding_is_ignored():
    ids = torch.tensor([[5, 6, 7, 0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    pipe = Pipeline(task_name="lm")
    b = pipe.split({"input_ids": ids, "attention_mask": mask, "labels": ids.clone()})
    # position t predicts token t+1; the last real position and the pad carry no target
    assert b.y.tolist() == [[6, 7, -100, -100]]


def test_the_shift_is_undone_for_a_model_that_shifts_its_labels_itself():
    y = shift_left(torch.tensor([[5, 6, 7, 8]]))
    labels = Pipeline(task_name="lm").labels_for_model(y)
    assert labels[:, 1:].tolist() == [[6, 7, 8]]  # what the model compares logits[:, :-1] to


def test_a_dict_batch_without_a_target_says_which_key_to_set():
    with pytest.raises(PipelineError, match="no target.*pipeline.target_key"):
        Pipeline().split({"pixel_values": torch.zeros(2, 3)})


def test_outputs_are_read_from_tensors_tuples_dicts_and_logits():
    logits = torch.randn(2, 3)
    pipe = Pipeline()
    assert pipe.output(logits) is logits
    assert pipe.output((logits, "cache")) is logits
    assert pipe.output({"loss": torch.tensor(1.0), "logits": logits}) is logits
    assert pipe.output({"scores": logits}) is logits  # the only tensor besides a loss


def test_an_unreadable_output_says_which_key_to_set():
    with pytest.raises(PipelineError, match="pipeline.output_key"):
        Pipeline().output({"a": torch.zeros(1), "b": torch.zeros(1)})


class DictItems(Dataset):
    def __init__(self, n: int, key: str = "labels") -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0).long()
        self.key = key

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"features": self.x[i], self.key: self.y[i]}


class KeywordNet(nn.Module):
    """A user's model called with keyword inputs, returning a dict of outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.net(features)}


def dict_data(key: str = "labels") -> trackcheck.DataSpec:
    return trackcheck.from_datasets(DictItems(384, key), DictItems(128, key), "multiclass", 3)


def test_dict_batches_and_dict_outputs_train_through_every_training_check():
    r = trackcheck.run(
        KeywordNet, dict_data(), checks=["overfit_batch", "loss_decreases"], progress=False
    )
    assert {c.name: c.status.value for c in r.checks} == {
        "overfit_batch": "pass",
        "loss_decreases": "pass",
    }


def test_a_batch_the_pipeline_cannot_read_is_a_config_error_with_the_report_on_disk(tmp_path):
    with pytest.raises(ConfigError, match="no target"):
        trackcheck.run(
            KeywordNet,
            dict_data(key="answer"),
            checks=["overfit_batch"],
            progress=False,
            output_dir=tmp_path,
        )
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "failed"


def test_the_users_loss_is_the_loss_the_checks_train_with():
    seen = []

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(out.shape)
        return nn.functional.cross_entropy(out, y)

    trackcheck.run(KeywordNet, dict_data(), checks=["overfit_batch"], loss=loss, progress=False)
    assert seen and seen[0][-1] == 3


def test_a_loss_that_does_not_return_a_scalar_is_a_config_error():
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y, reduction="none")

    with pytest.raises(ConfigError, match="not a scalar"):
        trackcheck.run(KeywordNet, dict_data(), checks=["overfit_batch"], loss=loss, progress=False)


def test_the_users_step_is_the_step_the_checks_train_with():
    calls = []

    def step(model: nn.Module, batch: dict, opt: torch.optim.Optimizer) -> torch.Tensor:
        calls.append(sorted(batch))  # the batch as the loader yields it
        opt.zero_grad()
        loss = nn.functional.cross_entropy(
            model(features=batch["features"])["logits"], batch["labels"]
        )
        loss.backward()
        opt.step()
        return loss

    trackcheck.run(KeywordNet, dict_data(), checks=["loss_decreases"], step=step, progress=False)
    assert calls and calls[0] == ["features", "labels"]


def test_a_misspelt_loss_name_is_refused():
    with pytest.raises(ConfigError, match="loss='modle'"):
        trackcheck.run(KeywordNet, blobs(), checks=["loss_at_init"], loss="modle", progress=False)


def test_ignored_positions_carry_no_loss():
    task = make_task("lm", 4)
    out = torch.zeros(1, 3, 4)
    y = torch.tensor([[1, -100, -100]])
    assert task.per_example_loss(out, y).item() == pytest.approx(
        torch.log(torch.tensor(4.0)).item()
    )
