"""A check that sees a non-finite loss gets its origin appended automatically; a check that
trains and fails points to gradient_flow's finding."""

from __future__ import annotations

import re

import torch
from conftest import blobs, run_check
from helpers.models import DividesByFeature, Stack, with_input
from torch import nn

import trackcheck
from trackcheck.core import Status


def test_check_seeing_a_nan_loss_names_where_it_started() -> None:
    # overfit_batch trains on the first 4 examples; example 2's first feature is 0
    r = run_check("overfit_batch", DividesByFeature, with_input(blobs(), 2, 0.0))
    assert "non-finite loss: " in r.message
    assert "forward output of ratio (Ratio) at example 2" in r.message
    assert r.metrics["nonfinite_example"] == 2


def test_finite_checks_get_no_origin_note() -> None:
    r = run_check("loss_at_init", lambda: nn.Sequential(nn.Linear(8, 4)), blobs())
    assert "non-finite" not in r.message
    assert "nonfinite_stage" not in r.metrics


def test_divergence_after_training_is_not_blamed_on_the_init() -> None:
    # SGD at lr 1e3: finite at init, the loss overflows after a few steps
    r = run_check(
        "loss_decreases",
        lambda: nn.Sequential(nn.Linear(8, 1)),
        blobs("regression"),
        optimizer=lambda ps: torch.optim.SGD(ps, lr=1e3),
    )
    assert r.status == Status.FAIL
    assert "finite through a freshly initialised model: the values diverged" in r.message


def test_failed_overfit_points_to_the_vanishing_gradient() -> None:
    report = trackcheck.run(
        lambda: Stack(nn.Sigmoid),
        blobs(),
        checks=["gradient_flow", "overfit_batch"],
        params={"overfit_batch": {"max_steps": 20}},
        tracker=None,
        progress=False,
    )
    # the fit cannot decide in 20 steps (a slow net or a broken one): it warns, pointing to
    # what gradient_flow found; gradient_flow's own FAIL gates the stage
    assert report["overfit_batch"].status == Status.WARN
    assert report["gradient_flow"].status == Status.FAIL and not report.passed
    msg = report["overfit_batch"].message
    # the shared run's first steps: the deepest sigmoid layers (3 or 4 of 13) get nothing back
    assert re.search(r"; gradient_flow: \d of 13 layers get < 1e-06 of the last layer's", msg)
