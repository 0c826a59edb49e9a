from pathlib import Path

import torch
from conftest import blobs, prior_bias, run_check
from models import SoftmaxBeforeCE

from trackcheck.core import Status
from trackcheck.models import GPT, MLP, ResNet


def test_resnet_memorises_four_digits(digits_data):
    r = run_check("overfit_batch", lambda: ResNet([1, 8, 8], 10), digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["best_loss"] <= r.metrics["target_loss"]
    assert Path(r.figures["overlay"]).is_file()


def test_two_examples_are_enough():
    data = blobs()
    r = run_check("overfit_batch", lambda: MLP([8], 4), data, {"n_examples": 2})
    assert r.status == Status.PASS, r.message
    assert "2 examples" in r.message


def test_fails_when_softmax_is_applied_before_cross_entropy(digits_data):
    # with probabilities as logits the loss cannot drop below -log(e / (e + 9)) = 1.46,
    # so 100 steps show the failure as well as 300
    r = run_check(
        "overfit_batch", lambda: SoftmaxBeforeCE([1, 8, 8], 10), digits_data, {"max_steps": 100}
    )
    assert r.status == Status.FAIL
    assert "softmax" in r.message


def test_regression_overlay(diabetes_data):
    r = run_check(
        "overfit_batch",
        lambda: MLP([10], 1, out_bias=prior_bias(diabetes_data)),
        diabetes_data,
        optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-2),
    )
    assert r.status == Status.PASS, r.message


def test_language_model_overlay_shows_tokens(text_data):
    r = run_check("overfit_batch", lambda: GPT(96, 32, d_model=32, n_layer=1), text_data)
    assert r.status == Status.PASS, r.message
    assert Path(r.figures["overlay"]).stat().st_size > 1000


def test_loss_series_has_one_point_per_step():
    r = run_check("overfit_batch", lambda: MLP([8], 4), blobs())
    assert len(r.series["loss"]) == int(r.metrics["steps"])
