"""The console: a line per check as it ends, then the verdict and each finding's reason.

A failing stage's last screen (80 x 50 included) holds the verdict, each failed check's
reason (what is wrong and the fix; failures first, then warnings, see ``trackcheck.gist``)
and, last, where the whole report is: report.html and report.json, where every message is
whole. Nothing is printed twice: a check's line is cut to the width, its reason comes once.

Everything a check wrote (names, messages) goes to rich as ``Text``, never as markup: a
message saying "expected [batch, C]" or "[bold]" prints as written.

Width: the terminal's, or ``COLUMNS`` when set; a log that is no terminal (CI) and sets no
``COLUMNS`` gets ``CI_COLUMNS``.
"""

from __future__ import annotations

import os
import sys
from collections import ChainMap
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from trackcheck import gist
from trackcheck.core import CheckResult, Report, Status

STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.ERROR: "bold magenta",
    Status.SKIP: "dim",
}
# a log that is no terminal and sets no COLUMNS: wide enough for a finding's reason on a
# line or two, narrow enough for a CI log viewer
CI_COLUMNS = 120
REASON_INDENT = 6  # a finding's reason wraps under this column: "fail  check: reason"
NAME_WIDTH = 22  # "vectorized_equivalence": progress lines line up for the built-in checks


def _any_tty() -> bool:
    return any(s is not None and s.isatty() for s in (sys.stdin, sys.stdout, sys.stderr))


def make_console(stderr: bool = True) -> Console:
    """A console on stderr whose width is ``COLUMNS`` when set, else the terminal's; no
    terminal and no ``COLUMNS``: ``CI_COLUMNS``. Read when built (``console``: at import)."""
    env: Any = os.environ
    if not _any_tty():  # rich would fall back to 80; the default only fills a missing COLUMNS
        env = ChainMap(os.environ, {"COLUMNS": str(CI_COLUMNS)})
    return Console(stderr=stderr, _environ=env)


console = make_console()


def _one_line(s: str) -> str:
    return " ".join(s.split())


def _status(s: Status) -> Text:
    return Text(s.value, style=STYLE[s])


class Progress:
    """A spinner per check on a terminal, then one line per check, cut to the width (a file
    or CI log gets the lines only)."""

    def __init__(self, enabled: bool, total: int, out: Console | None = None) -> None:
        self.enabled, self.total, self.i = enabled, total, 0
        self.out = out or console
        self._status: Any = None

    def __enter__(self) -> Progress:
        return self

    def start(self, name: str) -> None:
        self.i += 1
        if self.enabled and self.out.is_terminal:
            self._status = self.out.status(Text(f"[{self.i}/{self.total}] {name} ..."))
            self._status.start()

    def done(self, r: CheckResult) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self.enabled:
            self.out.print(progress_line(self.i, self.total, r, self.out.width))

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.stop()


def progress_line(i: int, total: int, r: CheckResult, width: int) -> Text:
    """``[i/n] name status time message``, cut to ``width``: the start of the message; the
    reason of a finding follows in the summary, the whole message is in report.html."""
    line = Text.assemble(
        f"[{i}/{total}]".ljust(len(f"[{total}/{total}]")) + " ",
        r.name.ljust(NAME_WIDTH) + " ",
        _status(r.status),
        " " * (5 - len(r.status.value)),
        f"{r.duration_s:7.2f}s",
        "  " + _one_line(r.message),
    )
    line.truncate(width, overflow="ellipsis")
    return line


def reason_budget(width: int, name: str) -> int:
    """Characters the reason of check ``name`` may take: two lines beside its status column
    with the name in front (a little less, since lines wrap at words)."""
    return max(gist.BUDGET // 2, 2 * (width - REASON_INDENT) - 10 - len(name) - 2)


def findings_block(report: Report, width: int) -> Table | None:
    """Each finding (failures first, then warnings): its status, then ``check: reason``,
    wrapped under its own column (what is wrong and the fix, see ``trackcheck.gist``)."""
    found = gist.findings(report)
    if not found:
        return None
    g = Table.grid(padding=(0, 1))
    g.add_column(no_wrap=True, width=REASON_INDENT - 1)
    g.add_column(overflow="fold")
    for c in found:
        why = gist.reason_of(c, report, reason_budget(width, c.name))
        g.add_row(_status(c.status), Text.assemble((c.name, "bold"), ": ", why))
    return g


def print_summary(report: Report, out: Console | None = None) -> None:
    """The verdict, each finding's reason, then where the whole report is (the last line):
    a failing stage's screen shows what failed and what to do without scrolling."""
    out = out or console
    style = "bold green" if report.passed else "bold red"
    out.print(Text(gist.verdict_line(report), style=style))
    if (block := findings_block(report, out.width)) is not None:
        out.print(block)
    # every message whole, the numbers and the figures: one click away
    folder = f"{report.output_dir}/" if report.output_dir else ""
    out.print(Text(f"report: {folder}report.html, report.json ({report.duration_s:.1f}s)"))
