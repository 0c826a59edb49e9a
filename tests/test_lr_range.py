"""lr_range: Smith's learning-rate range test, run after a failed training check or on request."""

from __future__ import annotations

from typing import Any

import torch
from conftest import blobs, run_check

import trackcheck
from trackcheck.core import Status
from trackcheck.models import MLP

ALWAYS = {"when": "always"}


def model() -> torch.nn.Module:
    return MLP([8], 4, width=32)


def adam(lr: float) -> Any:
    return lambda ps: torch.optim.Adam(ps, lr=lr)


def test_default_lr_is_in_the_usable_range() -> None:
    r = run_check("lr_range", model, blobs(), ALWAYS, optimizer=adam(3e-3))
    assert r.status == Status.PASS, r.message
    m = r.metrics
    assert m["configured_lr"] == 3e-3
    assert m["steepest_lr"] < m["divergence_lr"]
    assert "figures" in r.to_json()


def test_lr_10_is_above_the_divergence_lr() -> None:
    r = run_check("lr_range", model, blobs(), ALWAYS, optimizer=adam(10.0))
    assert r.status == Status.FAIL, r.message
    assert r.metrics["divergence_lr"] < 10.0
    assert "at or above the lr where the loss diverged" in r.message


def test_lr_far_below_the_steepest_descent_warns() -> None:
    r = run_check("lr_range", model, blobs(), ALWAYS, optimizer=adam(1e-7))
    assert r.status == Status.WARN, r.message
    assert "below the steepest descent" in r.message


def test_skipped_unless_a_training_check_failed() -> None:
    r = run_check("lr_range", model, blobs())
    assert r.status == Status.SKIP
    assert "checks.lr_range.when=always" in r.message


def test_runs_when_overfit_batch_could_not_decide() -> None:
    # overfit_batch given 2 steps, and no more, cannot fit its batch and warns that it could
    # not decide (a slow net or a wrong lr): the range test then runs by itself
    report = trackcheck.run(
        model,
        blobs(),
        checks=["overfit_batch", "lr_range"],
        params={"overfit_batch": {"max_steps": 2, "extend_to": 2}},
        progress=False,
    )
    assert report["overfit_batch"].status == Status.WARN
    r = report["lr_range"]
    assert r.status != Status.SKIP, r.message
    assert r.message.startswith("after overfit_batch warned: configured lr")


def test_an_lr_whose_run_recovered_from_its_spike_warns_instead_of_failing() -> None:
    # the PyTorch tutorial's logistic regression at SGD 0.5: the sweep diverges at 0.25,
    # yet at a constant 0.5 the loss spikes 2.3 -> 16 and falls to 0.15 ("recovered")
    from trackcheck.checks.lr_range import LrRangeParams, _verdict

    p = LrRangeParams()
    status, msg = _verdict(0.5, 0.036, 0.25, p, blown=[], top=10.0, recovered=["loss_decreases"])
    assert status == Status.WARN and "recovered" in msg and "configured lr 0.5" in msg
    # a run that diverged at the same lr still fails, recovered runs beside it or not
    status, msg = _verdict(
        0.5, 0.036, 0.25, p, blown=["output_range (spiked)"], top=10.0, recovered=["overfit_batch"]
    )
    assert status == Status.FAIL
    assert _verdict(0.5, 0.036, 0.25, p, blown=[], top=10.0)[0] == Status.FAIL
