"""The console output: at any width every check's status and the start of its message show,
full fail/warn messages follow the table, and no message text is taken for rich markup."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from trackcheck import console as tc
from trackcheck.core import CheckResult, Report, Status

MARKUP = "expected logits [batch, C], got [x] and [bold]not bold[/bold] :warning:"
WHY = (
    "no significant downward trend in 240 steps (Kendall tau -0.02, p=0.41 >= 0.0025; median "
    "loss change +0.3%): check the learning rate and that the loss is backpropagated into "
    "the model, see https://example.org/a/really/long/url/that/has/no/spaces/at/all/in/it"
)
CHECKS = [
    CheckResult("contract", Status.FAIL, MARKUP, value=1.0, threshold="0 broken"),
    CheckResult("vectorized_equivalence", Status.PASS, "batched forward matches " * 8, value=2e-7),
    CheckResult("loss_decreases", Status.FAIL, WHY, value=0.41, threshold="p < 0.0025 " * 5),
    CheckResult("full_eval", Status.WARN, "360 examples resolve accuracy to +-0.052 " * 4),
    CheckResult("causality", Status.SKIP, "not an autoregressive model: the task is multiclass"),
    CheckResult("determinism", Status.ERROR, "RuntimeError: boom (at determinism.py:12)"),
]


def render(width: int) -> str:
    out = Console(width=width, record=True, file=io.StringIO())
    tc.print_summary(Report(CHECKS, passed=False, gated_on=["contract"]), out)
    return out.export_text()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("width", [80, 120, 200])
def test_every_check_shows_its_status_and_the_start_of_its_message(width: int) -> None:
    text = render(width)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width
    table = lines[: next(i for i, ln in enumerate(lines) if ln.startswith("└"))]
    for c in CHECKS:
        (row,) = [ln for ln in table if f"│ {c.name}" in ln]
        assert f"│ {c.status.value} " in row
        assert " ".join(c.message.split())[:20] in row


@pytest.mark.parametrize("width", [80, 120, 200])
def test_fail_warn_and_error_messages_follow_the_table_whole(width: int) -> None:
    below = flat(render(width).split("└", 1)[1])
    for c in CHECKS:
        shown = flat(c.message) in below
        assert shown == (c.status in (Status.FAIL, Status.WARN, Status.ERROR)), c.name
    assert "value 0.41, threshold p < 0.0025" in below  # the verdict's numbers come along


def test_optional_columns_join_as_the_width_allows() -> None:
    heads = {w: render(w).splitlines()[2] for w in (80, 120, 200)}
    assert "status" in heads[80] and "value" not in heads[80]
    assert "value" in heads[120] and "time" in heads[120] and "threshold" not in heads[120]
    assert "threshold" in heads[200]


def test_markup_in_messages_prints_as_written() -> None:
    out = Console(width=200, record=True, file=io.StringIO())
    with tc.Progress(enabled=True, total=1, out=out) as bar:
        bar.start("contract")
        bar.done(CHECKS[0])
    progress = out.export_text()
    assert MARKUP in progress
    assert MARKUP in flat(render(80))  # the explanation below the table, at 80 columns


def test_progress_wraps_a_failure_and_cuts_a_pass_to_the_width() -> None:
    out = Console(width=80, record=True, file=io.StringIO())
    with tc.Progress(enabled=True, total=2, out=out) as bar:
        for c in CHECKS[1:3]:
            bar.start(c.name)
            bar.done(c)
    lines = out.export_text().splitlines()
    assert max(map(len, lines)) <= 80
    assert lines[0].startswith("[1/2] vectorized_equivalence pass") and lines[0].endswith("…")
    assert lines[1].startswith("[2/2] loss_decreases")
    col = lines[1].index("no significant")
    assert all(not ln[:col].strip() for ln in lines[2:])  # wrapped under its own column
    # nothing cut: a word longer than the column folds onto the next line
    assert "".join(WHY.split()) == "".join("".join(ln[col:] for ln in lines[1:]).split())


def test_width_follows_columns_and_defaults_for_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc, "_any_tty", lambda: False)
    monkeypatch.delenv("COLUMNS", raising=False)
    assert tc.make_console().width == tc.CI_COLUMNS
    monkeypatch.setenv("COLUMNS", "93")
    assert tc.make_console().width == 93
