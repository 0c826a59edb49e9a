"""A run that diverges never passes: a learning rate far too high fails the gate, under
checks=fast and the default checks, through lr_range, whose message names the lr and the
usable range it measured; far too low warns with the same naming; the same model at a high
but workable lr passes. The checks that train share one judgement of their run
(trackcheck/checks/_shared/_trajectory.py), tested here on plain loss series first.

The wide lr x optimizer x architecture matrix runs under the slow marker
(``python -m pytest -m slow tests/test_diverging_lr.py``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import pytest
import torch
from conftest import blobs
from helpers.models import ConvBN, GRUClassifier

import trackcheck
from trackcheck import DataSpec, Report, Status
from trackcheck.checks._shared._trajectory import judge, output_bound
from trackcheck.data import digits, text_corpus
from trackcheck.models import GPT, MLP

Opt = Callable[..., torch.optim.Optimizer]


# --- the shared judgement, on plain series ----------------------------------------------------


def test_a_loss_that_falls_is_judged_decreased():
    assert judge([2.3 - 0.02 * i for i in range(60)]).verdict == "decreased"


def test_a_loss_that_ends_above_its_start_is_judged_rose():
    t = judge([1.0 + 0.01 * i for i in range(60)])
    assert t.verdict == "rose" and t.diverging and "ended above its start" in t.why


def test_a_flat_loss_is_a_plateau_not_a_rise():
    g = torch.Generator().manual_seed(0)
    flat = (2.0 + 0.01 * torch.randn(60, generator=g)).tolist()
    assert judge(flat).verdict == "plateaued"


def test_a_spike_far_above_the_start_is_judged_spiked_even_when_the_loss_comes_back():
    losses = [2.3, 2.2, 555.0, 300.0] + [2.0] * 56  # the ResNet at lr 1e3: up, then partly back
    t = judge(losses)
    assert t.verdict == "spiked" and "555" in t.why


def test_a_spike_is_measured_against_the_priors_loss_when_the_start_is_near_zero():
    # a checkpoint starting at 0.05: noise to 0.3 is not a spike against a prior loss of 2.3
    assert judge([0.05, 0.3, 0.04] + [0.05] * 20, prior_loss=2.3).verdict != "spiked"
    assert judge([0.05, 0.3, 0.04] + [0.05] * 20).verdict == "spiked"


def test_regression_outputs_as_large_as_the_untrained_models_are_no_explosion():
    # the tutorial's Linear(3, 1) on (x, x^2, x^3) outputs |10-20| at init for sin targets
    # within 1: the bound grows with them; outputs 10x beyond both still explode
    y = torch.linspace(-1, 1, 50)
    at_init = torch.linspace(-18, 18, 50)
    assert output_bound(False, y) == pytest.approx(10.0, rel=1e-3)
    assert output_bound(False, y, at_init=at_init) == pytest.approx(180.0, rel=1e-3)
    assert judge([7e4, 3e4], max_output=20.0, bound=180.0).verdict == "decreased"
    assert judge([7e4, 3e4], max_output=2e3, bound=180.0).verdict == "exploded"


def test_a_nonfinite_loss_and_exploded_outputs_are_named():
    assert judge([2.3, math.nan]).verdict == "nonfinite"
    t = judge([0.7, 0.0, 0.0], max_output=7.4e14, bound=1e3)
    assert t.verdict == "exploded" and "7.4e+14" in t.why


def test_a_step_larger_than_the_weights_is_judged_overstepped():
    assert judge([0.7, 0.5, 0.6], max_update=5.3).verdict == "overstepped"
    assert judge([0.7, 0.5, 0.6], max_update=0.05).verdict != "overstepped"


def test_a_spike_the_loss_recovers_from_is_not_a_divergence():
    # the PyTorch tutorial's logistic regression at SGD 0.5 (tests/corpus/tut_nn_logistic):
    # 2.3 -> 16 in its first steps, each step larger than the default-init weights, then
    # down to 0.15 by step 60
    losses = [2.34, 5.6, 12.6, 16.2, 13.0, 11.5, 7.7, 5.8, 3.9, 2.3] + [
        1.0 - 0.017 * i for i in range(50)
    ]
    for t in (judge(losses), judge(losses, max_update=2.4)):
        assert t.verdict == "recovered" and not t.diverging and t.unstable, t.why
        assert "recovered" in t.why
    # LBFGS without a line search: one step lands on 119, the next back at 0.002
    assert judge([0.269, 0.2305, 119.07, 0.0024]).verdict == "recovered"


def test_a_spike_that_does_not_come_back_far_below_the_start_stays_a_divergence():
    # an MLP at Adam 1: 1.45 -> 51 -> 1.23 on output_range's fit (0.85 of its start)
    assert judge([1.45, 51.4] + [1.3] * 10 + [1.23] * 12).verdict == "spiked"
    t = judge([0.7, 0.5] + [0.45] * 10, max_update=2.4)
    assert t.verdict == "overstepped" and t.diverging
    # a step 5x the weights (a CNN with BatchNorm at Adam 1) fits 4 examples all the same:
    # the loss's recovery does not excuse a step that large
    t = judge([2.26, 5.6] + [0.2] * 18, max_update=5.5)
    assert t.verdict == "overstepped" and t.diverging


def test_a_rise_within_the_plateaus_noise_is_not_a_divergence():
    # a model on blanked inputs at the prior: its bias chasing each batch lifts the loss 0.3%
    losses = [2.302, 2.303, 2.302, 2.304, 2.303, 2.305, 2.304] + [2.309] * 23
    assert judge(losses).verdict == "plateaued"


# --- planted bugs: an lr far off, each with its correct-lr twin -------------------------------


@functools.cache
def data(name: str) -> DataSpec:
    if name == "digits":
        return digits()
    if name == "text":
        return text_corpus(seq_len=16, max_chars=8000)
    return blobs(name)


def text_gpt() -> torch.nn.Module:
    return GPT(len(data("text").itos or []), 16, d_model=16, n_head=2, n_layer=1)


# architecture -> (model factory, dataset)
ARCHS: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    "mlp": (lambda: MLP([8], 4, width=16), "multiclass"),
    "cnn_bn": (ConvBN, "digits"),
    "rnn": (GRUClassifier, "multiclass"),
    "transformer": (text_gpt, "text"),
    "regression": (lambda: MLP([8], 1, width=16), "regression"),
}


def adam(lr: float) -> Opt:
    return lambda ps: torch.optim.Adam(ps, lr=lr)


def adamw(lr: float) -> Opt:
    return lambda ps: torch.optim.AdamW(ps, lr=lr)


def sgd(lr: float, momentum: float = 0.0) -> Opt:
    return lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum)


TOO_HIGH: dict[str, Opt] = {
    "adam_1": adam(1.0),
    "adam_30": adam(30.0),
    "adam_1e3": adam(1e3),
    "adamw_1": adamw(1.0),
    "sgd_10": sgd(10.0),
    "sgd_100": sgd(100.0),
    "sgd_10_momentum": sgd(10.0, 0.9),
    "sgd_100_momentum": sgd(100.0, 0.9),
}
TOO_LOW: dict[str, Opt] = {"sgd_1e-7": sgd(1e-7), "adam_1e-8": adam(1e-8)}
WORKABLE: dict[str, Opt] = {"adam_3e-3": adam(3e-3), "adam_1e-2": adam(1e-2)}


def stage(arch: str, opt: Opt, checks: str) -> Report:
    model, name = ARCHS[arch]
    return trackcheck.run(model, data(name), checks=checks, optimizer=opt, progress=False)


def assert_lr_fails(report: Report, lr: float) -> None:
    r = report["lr_range"]
    assert not report.passed, r.message
    assert r.status == Status.FAIL, r.message
    assert f"configured lr {lr:.3g}" in r.message and "usable range measured" in r.message


def assert_passes(report: Report) -> None:
    bad = {c.name: c.message for c in report.checks if c.status in (Status.FAIL, Status.ERROR)}
    assert report.passed and not bad, bad


@pytest.mark.parametrize("checks", ["fast", "default"])
def test_adam_1e3_on_an_mlp_fails_the_gate_through_lr_range(checks):
    assert_lr_fails(stage("mlp", adam(1e3), "fast" if checks == "fast" else "all"), 1e3)


def test_the_same_mlp_at_a_high_but_workable_adam_lr_passes_fast():
    assert_passes(stage("mlp", adam(1e-2), "fast"))


def test_sgd_10_on_a_cnn_with_batchnorm_fails_fast_though_its_tiny_fits_converge():
    # BatchNorm keeps the outputs bounded and the 4-example fit converges: only the size of
    # its steps (each as large as the weights) shows the lr is far too high
    assert_lr_fails(stage("cnn_bn", sgd(10.0), "fast"), 10.0)


def test_the_same_cnn_at_sgd_0_1_with_momentum_passes_fast():
    assert_passes(stage("cnn_bn", sgd(0.1, 0.9), "fast"))


def test_a_regression_head_at_sgd_100_with_momentum_fails_fast():
    assert_lr_fails(stage("regression", sgd(100.0, 0.9), "fast"), 100.0)


def test_a_regression_head_at_its_adam_lr_passes_fast():
    report = stage("regression", adam(3e-3), "fast")
    assert report["overfit_batch"].status == Status.PASS
    assert report["lr_range"].status == Status.SKIP


def test_an_lr_far_too_low_warns_naming_it_and_the_usable_range():
    r = stage("mlp", sgd(1e-7), "fast")["lr_range"]
    assert r.status == Status.WARN, r.message
    assert "configured lr 1e-07" in r.message and "usable range measured" in r.message


@pytest.mark.slow
@pytest.mark.parametrize("checks", ["fast", "all"])
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("bad", list(TOO_HIGH))
def test_every_lr_far_too_high_fails_on_every_architecture(bad, arch, checks):
    lr = TOO_HIGH[bad]([torch.zeros(1, requires_grad=True)]).param_groups[0]["lr"]
    assert_lr_fails(stage(arch, TOO_HIGH[bad], checks), lr)


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("low", list(TOO_LOW))
def test_every_lr_far_too_low_fails_or_warns_naming_the_lr(low, arch):
    # a fit that moves nothing at the cap warns (it cannot tell a slow net from a broken
    # one), and lr_range, run after that warning, names the lr and the range it measured
    r = stage(arch, TOO_LOW[low], "fast")["lr_range"]
    assert r.status in (Status.WARN, Status.FAIL) and "usable range measured" in r.message


@pytest.mark.slow
@pytest.mark.parametrize("checks", ["fast", "all"])
@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("good", list(WORKABLE))
def test_every_architecture_at_a_workable_lr_gets_no_lr_finding(good, arch, checks):
    report = stage(arch, WORKABLE[good], checks)
    assert report["lr_range"].status in (Status.SKIP, Status.PASS), report["lr_range"].message
    trained = ("overfit_batch", "output_range", "loss_decreases", "input_independent")
    bad = [c.name for c in report.checks if c.name in trained and c.status == Status.FAIL]
    assert not bad, {n: report[n].message for n in bad}
