"""output_range: after a short fit, the outputs can reach the targets' range."""

from __future__ import annotations

import dataclasses

import torch
from conftest import blobs, run_check
from helpers.models import SoftmaxBeforeCE
from torch.utils.data import TensorDataset

from trackcheck import DataSpec
from trackcheck.core import Status
from trackcheck.models import MLP


def standardised(data: DataSpec) -> DataSpec:
    """Regression targets with mean 0 and std 1 (half of them negative)."""
    (xtr, ytr), (xte, yte) = data.train.tensors, data.test.tensors  # type: ignore[attr-defined]
    m, s = ytr.mean(), ytr.std()
    return dataclasses.replace(
        data, train=TensorDataset(xtr, (ytr - m) / s), test=TensorDataset(xte, (yte - m) / s)
    )


class ReluHead(MLP):
    """Planted bug: a ReLU after the regression head."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class SigmoidBeforeCE(MLP):
    """Planted bug: sigmoid probabilities where cross-entropy expects logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(x))


def test_relu_after_the_regression_head_fails() -> None:
    r = run_check("output_range", lambda: ReluHead([8], 1), standardised(blobs("regression")))
    assert r.status == Status.FAIL, r.message
    assert "predictions never go below 0 after" in r.message
    assert "of targets are below it" in r.message and "a ReLU" in r.message
    assert r.value > 0.3  # E[y^2; y < 0] / Var(y) = 0.5 for symmetric targets


def test_plain_linear_regression_head_passes() -> None:
    r = run_check("output_range", lambda: MLP([8], 1), standardised(blobs("regression")))
    assert r.status == Status.PASS, r.message


def test_relu_head_on_positive_targets_passes() -> None:
    # targets around 50: a head that cannot go below 0 loses nothing
    data = blobs("regression", y_shift=50.0)
    r = run_check("output_range", lambda: ReluHead([8], 1, out_bias=50.0), data)
    assert r.status == Status.PASS, r.message
    assert r.value == 0.0


def test_softmax_inside_the_classifier_fails() -> None:
    r = run_check("output_range", lambda: SoftmaxBeforeCE([8], 4), blobs())
    assert r.status == Status.FAIL, r.message
    assert "logits never leave [" in r.message and "each output row sums to 1" in r.message
    # logits in [0, 1]: the best cross-entropy is ln(1 + 3/e) = 0.74 of ln 4 = 1.39
    assert abs(r.metrics["bounded_loss"] - 0.742) < 0.02


def test_sigmoid_inside_the_classifier_fails() -> None:
    r = run_check("output_range", lambda: SigmoidBeforeCE([8], 4), blobs())
    assert r.status == Status.FAIL, r.message
    assert "a sigmoid" in r.message


def test_classifier_with_logits_passes() -> None:
    r = run_check("output_range", lambda: MLP([8], 4), blobs())
    assert r.status == Status.PASS, r.message
