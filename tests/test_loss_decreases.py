import torch
from conftest import blobs, run_check
from helpers.models import DetachedBody

from trackcheck import CheckResult, DataSpec
from trackcheck.checks._shared._trajectory import VERDICTS
from trackcheck.core import Status
from trackcheck.models import MLP


def with_bigger(data: DataSpec, base: dict[str, int], bigger: dict[str, int]) -> CheckResult:
    """loss_decreases on MLP(**base) with MLP(**bigger) as model.bigger, on digits."""
    return run_check(
        "loss_decreases",
        lambda: MLP([1, 8, 8], 10, **base),
        data,
        bigger_model=lambda: MLP([1, 8, 8], 10, **bigger),
    )


def test_passes_and_bigger_model_goes_lower(digits_data):
    r = with_bigger(digits_data, {"width": 16}, {"width": 64})
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
    assert "no significant downward trend in 240 steps" in r.message  # every look taken
    assert r.metrics["looks"] == 4


def test_slow_learner_gets_more_steps_instead_of_failing():
    # the false alarm: at a fine-tuning lr (Adam 3e-5) the loss drifts down too slowly for
    # 60 steps to show it (p = 0.068 at 60, seed 0); at 120 it is 6e-5
    r = run_check(
        "loss_decreases",
        lambda: MLP([8], 4),
        blobs(),
        optimizer=lambda ps: torch.optim.Adam(ps, lr=3e-5),
    )
    assert r.status == Status.PASS, r.message
    assert r.metrics["steps"] > 60 and r.metrics["looks"] >= 2
    # Bonferroni over the 6 looks: 60, 120, 180, 240 and, past the budget, 480, 960
    assert r.metrics["p_value"] < r.metrics["level"] == 0.01 / 6


def test_a_loss_that_hardly_moves_at_a_far_too_low_lr_warns_naming_it(digits_data):
    # SGD 1e-7: every parameter moves, the loss does not (median change 0.0% over 960
    # steps): a run that cannot show a trend is no evidence of a bug (it failed before,
    # "no significant downward trend in 240 steps"); it trains on to the cap, then warns
    # with the lr, and records a plateau for lr_range
    r = run_check(
        "loss_decreases",
        lambda: MLP([1, 8, 8], 10),
        digits_data,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=1e-7),
    )
    assert r.status == Status.WARN, r.message
    assert r.metrics["steps"] == 960 and r.metrics["looks"] == 6
    assert r.metrics["unchanged_params"] == 0 and r.metrics["undecided"] == 1.0
    assert r.message.startswith("undecided at lr 1e-07: no significant downward trend")
    assert VERDICTS[int(r.metrics["trajectory"])] == "plateaued"


def test_a_loss_that_goes_up_still_fails_without_extension(digits_data):
    # planted bug: gradient ascent (the loss's sign flipped in the optimizer's hands);
    # parameters move, the loss rises: decided, and no extension past the budget
    r = run_check(
        "loss_decreases",
        lambda: MLP([1, 8, 8], 10),
        digits_data,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=1e-3, maximize=True),
    )
    assert r.status == Status.FAIL, r.message
    assert r.metrics["steps"] <= 240


def test_a_decided_trend_stops_at_the_first_look(digits_data):
    r = run_check("loss_decreases", lambda: MLP([1, 8, 8], 10), digits_data)
    assert r.metrics["steps"] == 60 and r.metrics["looks"] == 1


def test_bigger_model_not_lower_is_information_not_a_warning(digits_data):
    # 60 steps cannot show a capacity gain: a bigger model that is merely not lower passes
    r = with_bigger(digits_data, {"width": 64}, {"width": 64, "depth": 3})
    assert r.status == Status.PASS, r.message
    assert "information only" in r.message


def test_warns_when_the_bigger_model_trains_worse(digits_data):
    # planted bug: the "bigger" variant is 12 plain layers at PyTorch's default init, which
    # shrinks the signal at every layer (no normalisation): on the same batches it stays
    # above the base model (median 1.71 vs 1.12 over the last 15 of 60 steps)
    r = with_bigger(digits_data, {"width": 16}, {"width": 64, "depth": 12})
    assert r.status == Status.WARN, r.message
    assert "significantly higher" in r.message
    assert r.metrics["bigger_p_worse"] < 0.05


def test_skips_a_fully_frozen_model_with_a_pointer(digits_data):
    def frozen() -> torch.nn.Module:
        return MLP([1, 8, 8], 10).requires_grad_(False)

    r = run_check("loss_decreases", frozen, digits_data)
    assert r.status == Status.SKIP
    assert "requires grad" in r.message and "contract" in r.message


def test_warns_without_capacity_gain_is_not_a_failure():
    # without a bigger model configured the comparison is skipped, and said so
    r = run_check("loss_decreases", lambda: MLP([8], 4), blobs())
    assert r.status == Status.PASS
    assert "no bigger model" in r.message


def test_a_bias_before_batchnorm_is_not_an_untrained_parameter(digits_data):
    # d2l's ResNet keeps the conv bias before each BatchNorm: the batch mean removes it, its
    # gradient is ~1e-8, and plain SGD's update is below float32's resolution, so it never
    # moves. It has no effect on the output: a note, not "the optimizer holds the wrong
    # parameters" (the planted bugs above, a detached body and a wrong optimizer, still fail)
    from helpers.public_programs import D2LResNet

    r = run_check(
        "loss_decreases",
        D2LResNet,
        digits_data,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=0.01),
    )
    assert r.status == Status.PASS, r.message
    assert r.metrics["params_without_effect"] == 3
    assert "no effect on the output" in r.message and "net.0.bias" in r.message


def test_a_run_that_spikes_and_recovers_warns_instead_of_passing():
    # the nn tutorial's logistic regression at its SGD lr 0.5 (tests/corpus/tut_nn_logistic):
    # its first steps overshoot (the weights move by more than their norm), then the loss
    # falls to 6% of its start. It trains, so no failure; a plain pass would hide the spike
    import corpus

    from trackcheck.checks._shared._trajectory import VERDICTS

    prog = corpus.module("tut_nn_logistic").program()
    r = run_check("loss_decreases", prog.pop("model"), prog.pop("data"), **prog)
    assert r.status == Status.WARN, r.message
    assert VERDICTS[int(r.metrics["trajectory"])] == "recovered"
    assert "unstable at lr 0.5" in r.message
