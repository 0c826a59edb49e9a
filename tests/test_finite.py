"""finite: a NaN/Inf is named where it starts (data, forward, backward); finite models pass."""

from __future__ import annotations

import torch
from conftest import blobs, run_check
from helpers.models import DividesByFeature, with_input
from torch import nn

from trackcheck.core import Status
from trackcheck.models import MLP


def test_division_by_zero_names_the_module_and_the_example() -> None:
    data = with_input(blobs(), 5, 0.0)
    r = run_check("finite", DividesByFeature, data)
    assert r.status == Status.FAIL
    assert "forward output of ratio (Ratio)" in r.message
    assert r.metrics["nonfinite_example"] == 5  # the first batch, in dataset order


def test_nan_in_one_input_example_is_named_as_data() -> None:
    r = run_check("finite", lambda: MLP([8], 4), with_input(blobs(), 37, float("nan"), 3))
    assert r.status == Status.FAIL
    assert "the input inputs holds NaN at example 37" in r.message
    assert "the data, not the model" in r.message


def huge_init() -> nn.Module:
    """Planted bug: weights scaled by 1e20 (an init scale gone wrong): the output overflows."""
    model = MLP([8], 4, width=16)
    with torch.no_grad():
        for q in model.parameters():
            q.mul_(1e20)
    return model


def test_overflow_names_the_first_layer_that_reaches_inf() -> None:
    r = run_check("finite", huge_init, blobs())
    assert r.status == Status.FAIL
    assert "Inf first appears in the forward output of body.3 (Linear)" in r.message


class SqrtReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x * (x > 0))  # finite forward; backward at 0: inf * 0 = NaN


def sqrt_model() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), SqrtReLU(), nn.Linear(16, 4))


def test_nan_gradient_names_the_module_in_backward() -> None:
    r = run_check("finite", sqrt_model, blobs())
    assert r.status == Status.FAIL
    assert "first appears in backward, in the input gradient of 1 (SqrtReLU)" in r.message


def test_finite_model_passes() -> None:
    r = run_check("finite", lambda: MLP([8], 4), blobs())
    assert r.status == Status.PASS, r.message
