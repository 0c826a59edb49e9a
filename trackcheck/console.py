"""Live progress while checks run, and the final table: check, status, value, time, message.

Everything a check wrote (names, messages, thresholds) goes to rich as ``Text``, never as
markup: a message saying "expected [batch, C]" or "[bold]" prints as written.

Width: the terminal's, or ``COLUMNS`` when set; a log that is no terminal (CI) and sets no
``COLUMNS`` gets ``CI_COLUMNS``. The summary table fits that width: check, status and the
start of the message always show (80 columns included); value, time and threshold join while
the message keeps ``MIN_MESSAGE`` characters. The full message of every check that failed,
warned or errored follows the table, wrapped, never cut.
"""

from __future__ import annotations

import os
import sys
from collections import ChainMap
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from trackcheck.core import CheckResult, Report, Status

STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.ERROR: "bold magenta",
    Status.SKIP: "dim",
}
# the verdicts whose full message is printed: the reason is what the user came for
EXPLAINED = (Status.FAIL, Status.ERROR, Status.WARN)
# a log that is no terminal and sets no COLUMNS: wide enough for value and time beside the
# message, narrow enough for a CI log viewer (they wrap, and fail/warn text is below anyway)
CI_COLUMNS = 120
# the message column keeps at least this many characters (about the first clause of a
# message, "all 360 test examples evaluated exactly once") before an optional column joins
MIN_MESSAGE = 40
MAX_THRESHOLD = 36  # a longer threshold is cut in the table; the detail below has it whole
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


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


def _status(s: Status) -> Text:
    return Text(s.value, style=STYLE[s])


class Progress:
    """A spinner per check on a terminal, then one line per check (a file or CI log gets the
    lines only). A pass or skip is one line cut to the width; a fail, warn or error prints
    its whole message, wrapped under the message column."""

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


def progress_line(i: int, total: int, r: CheckResult, width: int) -> Text | Table:
    """``[i/n] name status time message``: a pass or skip cut to ``width``; a fail, warn or
    error as a grid whose message wraps under its own column."""
    head = Text.assemble(
        f"[{i}/{total}]".ljust(len(f"[{total}/{total}]")) + " ",
        r.name.ljust(NAME_WIDTH) + " ",
        _status(r.status),
        " " * (5 - len(r.status.value)),
        f"{r.duration_s:7.2f}s",
    )
    if r.status not in EXPLAINED:
        line = head + Text("  " + _one_line(r.message))
        line.truncate(width, overflow="ellipsis")
        return line
    g = Table.grid(padding=(0, 2))
    g.add_column(no_wrap=True)
    g.add_column(overflow="fold")
    g.add_row(head, Text(r.message))
    return g


def _optional_columns(checks: Sequence[CheckResult]) -> list[tuple[str, list[str], int]]:
    """(header, cells, width) of the columns that join when there is room, most useful first."""
    cols = [
        ("value", [_fmt(c.value) for c in checks]),
        ("time", [f"{c.duration_s:.2f}s" for c in checks]),
        ("threshold", [_one_line(c.threshold) for c in checks]),
    ]
    out = []
    for head, cells in cols:
        w = max([len(head), *map(len, cells)])
        out.append((head, cells, min(w, MAX_THRESHOLD) if head == "threshold" else w))
    return out


def summary_table(report: Report, width: int) -> Table:
    """The summary as a table that fits ``width`` columns (see the module doc)."""
    checks = report.checks
    name_w = max([len("check"), *(len(c.name) for c in checks)])
    # a column costs its width + 3 (a divider and a space each side); the edge one more
    room = width - 1 - (name_w + 3) - (len("status") + 3) - 3
    picked = []
    for head, cells, w in _optional_columns(checks):
        if room - (w + 3) >= MIN_MESSAGE:
            picked.append((head, cells, w))
            room -= w + 3
    t = Table(
        title=Text(f"trackcheck: {report.status.upper()}"),
        title_style="bold green" if report.passed else "bold red",
        box=box.SQUARE,
        width=width,
    )
    t.add_column("check", no_wrap=True, min_width=min(name_w, 12), overflow="ellipsis")
    t.add_column("status", no_wrap=True, min_width=6)
    for head, _, w in picked:
        t.add_column(head, no_wrap=True, width=w, overflow="ellipsis")
    t.add_column("message", no_wrap=True, overflow="ellipsis", ratio=1)
    for k, c in enumerate(checks):
        extra = [Text(cells[k]) for _, cells, _ in picked]
        t.add_row(Text(c.name), _status(c.status), *extra, Text(_one_line(c.message)))
    return t


def explanations(report: Report) -> Group | None:
    """The whole message of every check that failed, errored or warned, with its value and
    threshold, wrapped to the width (a long word folds rather than vanishing)."""
    parts: list[Any] = []
    for c in report.checks:
        if c.status not in EXPLAINED:
            continue
        head = Text.assemble(_status(c.status), " ", (c.name, "bold"))
        if c.value is not None or c.threshold:
            head.append(f"  value {_fmt(c.value) or '-'}, threshold {c.threshold or '-'}")
        parts += [head, Padding(Text(c.message, overflow="fold"), (0, 0, 0, 2))]
    return Group(*parts) if parts else None


def print_summary(report: Report, out: Console | None = None) -> None:
    """The table, then the full reason for every fail/warn/error, then where the report is."""
    out = out or console
    out.print(summary_table(report, out.width))
    if (why := explanations(report)) is not None:
        out.print(why)
    out.print(Text(f"report: {report.output_dir}/report.json  ({report.duration_s:.1f}s)"))
    if not report.passed:
        out.print(Text(f"gate failed on: {', '.join(report.gated_on)}", style="bold red"))
