"""The console: a line per check, then the verdict, each finding's reason (failures first)
and, last, where the whole report is; no message text is taken for rich markup."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from trackcheck import console as tc
from trackcheck import gist
from trackcheck.core import CheckResult, Report, Status

ROOT = Path(__file__).resolve().parents[1]
MARKUP = "expected logits [batch, C], got [x] and [bold]not bold[/bold] :warning:"
WHY = (
    "no significant downward trend in 240 steps (Kendall tau -0.02, p=0.41 >= 0.0025; median "
    "loss change +0.3%): the updates do not reach the weights, or the lr is far too low or "
    "too high for this model. Check the learning rate and that the loss is backpropagated "
    "into the model"
)
CHECKS = [
    CheckResult("contract", Status.FAIL, MARKUP, value=1.0, threshold="0 broken"),
    CheckResult("vectorized_equivalence", Status.PASS, "batched forward matches " * 8, value=2e-7),
    CheckResult("full_eval", Status.WARN, "360 examples resolve accuracy to +-0.052 " * 4),
    CheckResult("loss_decreases", Status.FAIL, WHY, value=0.41, threshold="p < 0.0025 " * 5),
    CheckResult("causality", Status.SKIP, "not an autoregressive model: the task is multiclass"),
    CheckResult("determinism", Status.ERROR, "RuntimeError: boom (at determinism.py:12)"),
]
REPORT = Report(CHECKS, passed=False, gated_on=["contract"], output_dir="/out/run")


def render(width: int) -> str:
    out = Console(width=width, record=True, file=io.StringIO())
    tc.print_summary(REPORT, out)
    return out.export_text()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_summary_leads_with_the_verdict_and_ends_with_the_report_files(width: int) -> None:
    lines = render(width).splitlines()
    assert lines[0] == "trackcheck: FAILED (2 fail, 1 error, 1 warn, 1 pass, 1 skip)"
    assert lines[-1] == "report: /out/run/report.html, report.json (0.0s)"
    assert max(map(len, lines)) <= width


@pytest.mark.parametrize("width", [80, 120, 200])
def test_each_finding_gets_its_reason_failures_first_then_warnings(width: int) -> None:
    lines = render(width).splitlines()[1:-1]
    starts = [ln.split(":")[0].split() for ln in lines if not ln.startswith(" ")]
    assert starts == [
        ["fail", "contract"],
        ["fail", "loss_decreases"],
        ["error", "determinism"],
        ["warn", "full_eval"],
    ]
    block = flat("\n".join(lines))
    for c, why in [(c, gist.reason(c.message, tc.reason_budget(width, c.name))) for c in CHECKS]:
        assert (f"{c.name}: {why}" in block) == (c.status in gist.ORDER), c.name
    # at most two lines each: what is wrong and the fix, never the whole message
    assert len(lines) <= 2 * 4


def test_a_long_message_is_never_printed_whole_nor_twice() -> None:
    out = Console(width=80, record=True, file=io.StringIO())
    with tc.Progress(enabled=True, total=len(CHECKS), out=out) as bar:
        for c in CHECKS:
            bar.start(c.name)
            bar.done(c)
    tc.print_summary(REPORT, out)
    text = flat(out.export_text())
    assert flat(WHY) not in text  # report.html has it whole
    assert text.count("no significant downward trend") == 2  # its progress line, its reason
    assert "backpropagated into the model" in text  # the fix, at the message's end
    assert text.count("the updates do not reach the weights") == 0  # the middle, elided


def test_progress_prints_one_line_per_check_cut_to_the_width() -> None:
    out = Console(width=80, record=True, file=io.StringIO())
    with tc.Progress(enabled=True, total=len(CHECKS), out=out) as bar:
        for c in CHECKS:
            bar.start(c.name)
            bar.done(c)
    lines = out.export_text().splitlines()
    assert len(lines) == len(CHECKS)
    assert all(len(ln) <= 80 for ln in lines)
    assert lines[3].startswith("[4/6] loss_decreases         fail") and lines[3].endswith("…")


def test_markup_in_messages_prints_as_written() -> None:
    out = Console(width=200, record=True, file=io.StringIO())
    with tc.Progress(enabled=True, total=1, out=out) as bar:
        bar.start("contract")
        bar.done(CHECKS[0])
    progress = out.export_text()
    assert MARKUP[:30] in progress
    assert MARKUP in flat(render(80))  # its reason, at 80 columns


def test_width_follows_columns_and_defaults_for_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc, "_any_tty", lambda: False)
    monkeypatch.delenv("COLUMNS", raising=False)
    assert tc.make_console().width == tc.CI_COLUMNS
    monkeypatch.setenv("COLUMNS", "93")
    assert tc.make_console().width == 93


# --- a real stage in a real terminal ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_a_failing_stage_fits_its_verdict_and_reasons_on_an_80x50_screen(tmp_path: Path) -> None:
    """A planted bug (hidden layers detached) in a real 80 x 50 terminal: the screen it leaves
    holds the verdict, every failed check's reason and the report's files, unscrolled."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["+model=mlp", "model._target_=helpers.models.DetachedBody", "tracker=none"]
    script = [sys.executable, str(ROOT / "scripts/console_screen.py"), "--cwd", str(tmp_path)]
    p = subprocess.run(
        [*script, "--", *args], env=env, capture_output=True, text=True, timeout=600, check=True
    )
    screen, _, status = p.stdout.rstrip("\n").rpartition("\n")
    assert status.startswith("exit code 1"), p.stdout + p.stderr
    lines = screen.splitlines()
    assert len(lines) <= 50 and max(map(len, lines)) <= 80
    (path,) = tmp_path.glob("outputs/*/*/report.json")
    report = Report.from_json(json.loads(path.read_text()))
    assert report.gated_on, "the planted bug was not caught: nothing to show"
    assert gist.verdict_line(report) in lines
    assert lines[0].startswith("[1/")  # nothing scrolled off: the first check's line is there
    text = flat(screen)
    for c in gist.findings(report):
        why = gist.reason_of(c, report, tc.reason_budget(80, c.name))
        assert flat(f"{c.status.value} {c.name}: {why}") in text, c.name
    # the last line (wrapped where the folder is long) says where the whole report is
    last = f"report: {report.output_dir}/report.html, report.json ({report.duration_s:.1f}s)"
    assert "".join(lines).replace(" ", "").endswith(last.replace(" ", ""))
