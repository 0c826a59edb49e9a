"""Live progress while checks run, and the final table: check, status, value vs threshold, time."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trackcheck.core import CheckResult, Report, Status

STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.ERROR: "bold magenta",
    Status.SKIP: "dim",
}

# a CI log is no terminal: give it room so the table's columns are not squeezed
console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


class Progress:
    """A spinner per check on a terminal; one line per check when output is a file or CI log."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.i = enabled, total, 0
        self._status: Any = None

    def __enter__(self) -> Progress:
        return self

    def start(self, name: str) -> None:
        self.i += 1
        if self.enabled and console.is_terminal:
            self._status = console.status(f"[{self.i}/{self.total}] {name} ...")
            self._status.start()

    def done(self, r: CheckResult) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self.enabled:
            style = STYLE[r.status]
            # messages are text, not rich markup: "[batch, C]" must print as is
            console.print(
                f"[{self.i}/{self.total}] {escape(f'{r.name:<24}')} "
                f"[{style}]{r.status.value:<5}[/] "
                f"{r.duration_s:6.2f}s  {escape(_short(r.message, 90))}",
                highlight=False,
            )

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.stop()


def _short(s: str, n: int) -> str:
    s = s.replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.4g}"


def print_summary(report: Report) -> None:
    t = Table(
        title=f"trackcheck: {report.status.upper()}",
        title_style=("bold green" if report.passed else "bold red"),
    )
    for col in ("check", "status", "value", "threshold", "time"):
        t.add_column(col, no_wrap=True)
    t.add_column("message", no_wrap=True, overflow="ellipsis", max_width=70)
    for c in report.checks:
        t.add_row(
            escape(c.name),
            f"[{STYLE[c.status]}]{c.status.value}[/]",
            _fmt(c.value),
            escape(c.threshold),
            f"{c.duration_s:.2f}s",
            escape(c.message),
        )
    console.print(t)
    console.print(
        f"report: {escape(report.output_dir)}/report.json  ({report.duration_s:.1f}s)",
        highlight=False,
    )
    if not report.passed:
        console.print(f"[bold red]gate failed on: {escape(', '.join(report.gated_on))}[/]")
