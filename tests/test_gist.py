"""A finding's reason: what is wrong and the fix, short enough for one glance."""

from __future__ import annotations

from trackcheck import gist
from trackcheck.core import CheckResult, Report, Status

FLOW = (
    "4 trainable parameter tensors get no gradient in 3 steps (body.1.weight, body.1.bias, "
    "body.3.weight, ... (4 in all)): their modules run, but their output does not reach the "
    "loss (unused or detached); they never train (and DistributedDataParallel fails on them). "
    "Use them, remove them, freeze them, or allow them (checks.gradient_flow.allow_unused)"
)


def test_a_short_message_is_its_own_reason() -> None:
    assert (
        gist.reason("loss is NaN at step 3: lower the lr") == "loss is NaN at step 3: lower the lr"
    )


def test_asides_go_but_a_config_key_and_a_call_stay() -> None:
    why = gist.reason(FLOW, budget=1000)
    assert "body.1.weight" not in why and "(unused or detached)" not in why
    assert "(checks.gradient_flow.allow_unused)" in why
    assert gist.drop_asides("cut by .detach() here (see above)") == "cut by .detach() here"


def test_a_long_message_keeps_what_is_wrong_and_the_fix() -> None:
    why = gist.reason(FLOW, budget=150)
    assert len(why) <= 150
    assert why.startswith("4 trainable parameter tensors get no gradient in 3 steps … ")
    assert why.endswith("allow them (checks.gradient_flow.allow_unused)")


def test_another_checks_note_is_not_repeated() -> None:
    msg = "4 tensors never changed: a .detach() cuts them off; gradient_flow: 4 tensors get none"
    assert (
        gist.reason(msg, others=["gradient_flow"])
        == "4 tensors never changed: a .detach() cuts them off"
    )


def test_findings_put_failures_first_then_warnings() -> None:
    checks = [
        CheckResult("a", Status.WARN, "w"),
        CheckResult("b", Status.PASS, "p"),
        CheckResult("c", Status.ERROR, "e"),
        CheckResult("d", Status.FAIL, "f"),
        CheckResult("e", Status.SKIP, "s"),
    ]
    report = Report(checks, passed=False, gated_on=["c", "d"])
    assert [c.name for c in gist.findings(report)] == ["d", "c", "a"]
    assert (
        gist.verdict_line(report) == "trackcheck: FAILED (1 fail, 1 error, 1 warn, 1 pass, 1 skip)"
    )
