import dataclasses

import numpy as np
import pytest
import torch
from conftest import prior_bias, run_check
from helpers.models import SlowBatchNormNet
from torch.utils.data import TensorDataset

from trackcheck.checks.prediction_dynamics import jitter_per_step, roughness
from trackcheck.core import Status
from trackcheck.models import MLP


def adam(lr):
    return lambda ps: torch.optim.Adam(ps, lr=lr)


def test_passes_at_the_default_lr(cancer_data):
    bias = prior_bias(cancer_data)
    r = run_check(
        "prediction_dynamics",
        lambda: MLP([30], 1, out_bias=bias),
        cancer_data,
        optimizer=adam(3e-3),
    )
    assert r.status == Status.PASS, r.message
    assert r.metrics["jitter"] < 0.025
    assert r.metrics["last_mean_score"] > r.metrics["first_mean_score"]  # it learned
    assert len(r.series["mean_score"]) == 61  # init + every one of 60 steps
    assert "dynamics" in r.figures


def test_warns_at_a_learning_rate_100x_too_high(cancer_data):
    bias = prior_bias(cancer_data)
    r = run_check(
        "prediction_dynamics", lambda: MLP([30], 1, out_bias=bias), cancer_data, optimizer=adam(0.3)
    )
    assert r.status == Status.WARN
    assert "oscillate" in r.message and "learning rate" in r.message
    assert r.metrics["jitter"] > 0.05


def test_warns_when_training_moves_held_out_predictions_away_from_the_labels(digits_data):
    # planted bug: the test labels are encoded differently (shifted by one class), so the
    # smoother training gets, the further the held-out predictions move from their labels
    x, y = digits_data.test.tensors
    shifted = dataclasses.replace(digits_data, test=TensorDataset(x, (y + 1) % 10))
    bias = prior_bias(digits_data)
    r = run_check(
        "prediction_dynamics",
        lambda: MLP([1, 8, 8], 10, out_bias=bias),
        shifted,
        optimizer=adam(3e-3),
    )
    assert r.status == Status.WARN
    assert r.metrics["jitter"] < 0.025  # smooth: only the loss rule fires
    assert "ended higher than at init" in r.message


def test_regression_predictions_are_judged_in_target_std_units(diabetes_data):
    bias = prior_bias(diabetes_data)
    ok = run_check(
        "prediction_dynamics",
        lambda: MLP([10], 1, out_bias=bias),
        diabetes_data,
        optimizer=adam(3e-3),
    )
    bad = run_check(
        "prediction_dynamics",
        lambda: MLP([10], 1, out_bias=bias),
        diabetes_data,
        optimizer=adam(0.3),
    )
    assert ok.status == Status.PASS, ok.message
    assert bad.status == Status.WARN
    assert "target std" in ok.message


def test_fails_when_training_diverges(diabetes_data):
    # linear regression under SGD at lr 10 grows geometrically until the loss overflows
    r = run_check(
        "prediction_dynamics",
        lambda: MLP([10], 1, depth=0),
        diabetes_data,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=10.0),
    )
    assert r.status == Status.FAIL
    assert "diverged" in r.message and "NaN/Inf" in r.message


def test_jitter_is_zero_on_straight_trends_and_4a_on_an_oscillation():
    steps = np.arange(20.0)[:, None]
    trends = np.hstack([0.01 * steps, 0.1 - 0.002 * steps])  # [K, 2] two straight lines
    assert np.allclose(jitter_per_step(trends), 0.0)
    a = 0.05
    zigzag = 0.5 + a * (-1.0) ** steps  # +-a around 0.5 every step
    assert np.allclose(jitter_per_step(zigzag), 4 * a)
    assert roughness(zigzag) == pytest.approx(2.0)


def test_records_a_batchnorm_model_with_statistics_of_its_current_weights(digits_data):
    # BatchNorm momentum 0.01: on the running statistics as training leaves them the recorded
    # predictions barely move from chance (mean p(true class) 0.10 -> 0.10 over 60 steps, 5
    # seeds); recomputed before each record they follow the training, 0.10 -> 0.26-0.34
    r = run_check("prediction_dynamics", SlowBatchNormNet, digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["last_mean_score"] > r.metrics["first_mean_score"] + 0.1
