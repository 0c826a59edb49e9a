import torch
from conftest import blobs, run_check
from models import DetachedBody

from trackcheck.core import Status
from trackcheck.models import MLP


def test_passes_and_bigger_model_goes_lower(digits_data):
    r = run_check(
        "loss_decreases",
        lambda: MLP([1, 8, 8], 10, width=16),
        digits_data,
        bigger_model=lambda: MLP([1, 8, 8], 10, width=64),
    )
    assert r.status == Status.PASS, r.message
    assert r.metrics["p_value"] < 0.01
    assert r.metrics["bigger_last_loss"] < r.metrics["last_loss"]


def test_fails_on_detached_sub_graph(digits_data):
    r = run_check("loss_decreases", lambda: DetachedBody([1, 8, 8], 10), digits_data)
    assert r.status == Status.FAIL
    assert "body.1.weight" in r.message and "no gradient" in r.message


def test_fails_when_optimizer_holds_the_wrong_parameters(digits_data):
    def head_only(params):  # the bug: built over the last layer only
        return torch.optim.Adam(list(params)[-2:], lr=3e-3)

    r = run_check("loss_decreases", lambda: MLP([1, 8, 8], 10), digits_data, optimizer=head_only)
    assert r.status == Status.FAIL
    assert "optimizer never updates them" in r.message


def test_fails_when_the_loss_does_not_trend_down(digits_data):
    r = run_check(
        "loss_decreases",
        lambda: MLP([1, 8, 8], 10),
        digits_data,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=0.0),
    )
    assert r.status == Status.FAIL
    assert "no significant downward trend" in r.message


def test_warns_without_capacity_gain_is_not_a_failure():
    # without a bigger model configured the comparison is skipped, and said so
    r = run_check("loss_decreases", lambda: MLP([8], 4), blobs())
    assert r.status == Status.PASS
    assert "no bigger model" in r.message
