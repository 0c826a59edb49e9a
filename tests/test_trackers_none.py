"""tracker=none and the tracker plumbing shared by every backend."""

from __future__ import annotations

import json

import pytest
from conftest import tracked_stage

from trackcheck.trackers import NoTracker, make_tracker
from trackcheck.trackers.base import compared, figure_key


def test_no_tracker_still_writes_report_json_and_html(tmp_path):
    report = tracked_stage(None, tmp_path)
    assert report.tracker == {"backend": "none"}
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "passed"
    page = (tmp_path / "report.html").read_text()
    assert "overfit_batch" in page and "data:image/png;base64," in page


def test_auto_without_an_active_run_is_no_tracker():
    assert isinstance(make_tracker("auto"), NoTracker)


def test_unknown_tracker_name_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="none, mlflow, wandb, auto"):
        make_tracker("tensorboard")


def test_figure_key_steps_aside_from_a_metric_of_the_same_name():
    taken = {"sanity/loss_decreases/loss"}
    assert figure_key("loss_decreases", "loss", taken) == "sanity/loss_decreases/loss_figure"
    assert figure_key("overfit_batch", "overlay", taken) == "sanity/overfit_batch/overlay"


@pytest.mark.parametrize(
    "names,word",
    [
        (["loss_run1", "loss_run2", "loss_other_seed"], "loss"),  # determinism
        (["train_loss_real", "train_loss_blanked"], "train_loss"),  # input_independent
        (["loss", "bigger_loss"], "loss"),  # loss_decreases
        (["low_edge", "high_edge"], "edge"),  # output_range
        (["loss", "lr"], None),  # lr_range: two units, two charts
        (["mean_score", "heldout_loss", "step_jitter"], None),  # prediction_dynamics
        (["grad_norm"], None),  # nothing to compare
    ],
)
def test_series_that_share_a_word_are_the_ones_drawn_together(names, word):
    series = {f"sanity/c/{n}": [(0, 1.0)] for n in names}
    assert compared(series) == word
