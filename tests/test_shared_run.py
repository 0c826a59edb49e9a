"""The shared training run (trackcheck/checks/_shared/_run.py): the checks that watch a fresh
model train (gradient_flow, prediction_dynamics, loss_decreases' base model,
input_independent's real-input model) read one run, and each reads exactly what it would
have read from a run of its own."""

from __future__ import annotations

from typing import Any

import torch
from conftest import run_check
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from trackcheck import DataSpec, from_datasets, run
from trackcheck.core import Report, Status
from trackcheck.models import MLP

TRAINING = ["gradient_flow", "loss_decreases", "prediction_dynamics", "input_independent"]
ROW = "shared training run"


def mlp() -> nn.Module:
    return MLP([1, 8, 8], 10, width=16)


def stage(data: DataSpec, checks: list[str], model: Any = mlp) -> Report:
    return run(model, data, checks=checks, progress=False)


def numbers(r: Any) -> tuple[str, dict[str, float], dict[str, list[tuple[int, float]]]]:
    return r.status, r.metrics, r.series


def test_a_stage_trains_one_model_for_the_four_checks(digits_data):
    report = stage(digits_data, TRAINING)
    row = report.shared[ROW]
    assert row["runs"] == 1
    # the longest reader decides the length: 60 steps at the defaults, one forward and one
    # backward each; the checks' own passes are their reading (held-out forwards) only
    assert row["steps"] == 60 and row["fwd"] == 60 and row["bwd"] == 60
    assert report["gradient_flow"].n_forward == report["gradient_flow"].n_backward == 0
    assert report["prediction_dynamics"].n_backward == 0
    assert report["prediction_dynamics"].n_forward == 61  # the fixed batch at init + each step


def test_input_independent_trains_only_its_blanked_model(digits_data):
    # its real-input model is the shared run's: the check's own backward passes are the
    # blanked model's steps, as many as the run's steps it judged after
    report = stage(digits_data, TRAINING)
    ii = report["input_independent"]
    assert ii.status == Status.PASS, ii.message
    steps = int(ii.metrics["steps"])
    assert ii.n_backward == steps
    real = [v for _, v in ii.series["train_loss_real"]]
    assert real == [v for _, v in report["loss_decreases"].series["loss"]][:steps]


def test_the_run_never_trains_on_the_held_out_training_slice():
    # input_independent judges on a slice of the training split that its real-input model,
    # the shared run's, must never see; the run leaves it out whichever checks are selected
    from trackcheck.checks._shared._run import batches
    from trackcheck.checks.input_independent._heldout import plan
    from trackcheck.context import Context

    n = 200
    xs = torch.arange(n, dtype=torch.float32).unsqueeze(1)  # [N, 1]: each example's index
    ds = TensorDataset(xs, torch.zeros(n, dtype=torch.long))
    data = from_datasets(ds, ds, "multiclass", num_outputs=2, batch_size=16)
    ctx = Context(
        model_factory=lambda: nn.Linear(1, 2), data=data, optimizer_factory=torch.optim.Adam
    )
    held = {int(x) for x, _ in plan(ctx, 0.2, 1024).judged["training slice"]().dataset}
    stream = batches(ctx)
    seen = {int(v) for _ in range(3 * n // 16) for v in next(stream).x.flatten()}
    assert len(held) == 40 and not held & seen
    assert seen == set(range(n)) - held  # the rest, every example of it


def test_each_check_reads_what_it_would_read_alone(digits_data):
    together = stage(digits_data, TRAINING)
    for name in TRAINING:
        alone = run_check(name, mlp, digits_data)
        assert numbers(alone) == numbers(together[name]), name


def test_check_order_does_not_matter(digits_data):
    forward = stage(digits_data, TRAINING)
    backward = stage(digits_data, TRAINING[::-1])
    for name in TRAINING:
        assert numbers(forward[name]) == numbers(backward[name]), name


def test_a_longer_reader_keeps_the_run_going(digits_data):
    # loss_decreases on a plateau looks again after each 60 steps: the run goes on for it
    # after prediction_dynamics has decided, and prediction_dynamics still reads 60 steps
    report = run(
        mlp,
        digits_data,
        checks=TRAINING,
        params={"loss_decreases": {"steps": 20, "max_steps": 80, "extend_to": 80, "alpha": 1e-300}},
        progress=False,
    )
    assert report.shared[ROW]["steps"] == 80
    assert report["loss_decreases"].metrics["steps"] == 80
    assert report["prediction_dynamics"].metrics["steps"] == 60


class FailsInEval(nn.Module):
    """Trains fine; its eval-mode forward raises (only prediction_dynamics records in eval)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp()

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            raise RuntimeError("no eval mode here")
        return self.net(x)


def test_an_error_in_one_reader_is_that_checks_alone(digits_data):
    report = stage(digits_data, TRAINING, model=FailsInEval)
    assert report["prediction_dynamics"].status == Status.ERROR
    assert "no eval mode here" in report["prediction_dynamics"].message
    assert report["loss_decreases"].status == Status.PASS, report["loss_decreases"].message
    assert report["gradient_flow"].status == Status.PASS, report["gradient_flow"].message


def test_input_independent_judges_the_whole_run_its_real_model_is_a_prefix_of() -> None:
    # the nn tutorial's logistic regression at SGD 0.5 (seed 1): the loss spikes in the first
    # steps and recovers by the end of loss_decreases' run; input_independent decides within
    # its first look, on the spike. Read on its 30 steps alone, its run "spiked" and lr_range
    # failed the correct program; the trajectory it records is the whole run's.
    from corpus._run import run_program

    o = run_program(
        "tut_nn_logistic", seed=1, checks=["input_independent", "loss_decreases", "lr_range"]
    )
    assert not o.failed, o.explain()
    assert o.statuses["lr_range"] == "warn"  # the lr sits past the edge of stability: said
    assert "input_independent's run spiked" not in o.messages["lr_range"]
    assert "input_independent's run recovered" in o.messages["lr_range"]
