"""The tracker protocol and the one function that maps a Report onto any tracker.

A tracker is thin: it knows its SDK (imported lazily) and nothing about checks. The naming
scheme lives here, once, and is the same in every backend:

- ``sanity/<check>/<metric>``: a check's scalars and series (a series is plotted against
  ``sanity/<check>/step``, its own x-axis);
- ``sanity/<check>/<figure>``: a check's pictures (``<figure>_figure`` when the name is also
  one of the check's metrics, e.g. loss_decreases' ``loss`` curve and its ``loss`` series);
- ``sanity/<check>/<table>``, ``sanity/summary`` (one row per check), ``sanity/report``
  (the HTML page), ``sanity/passed``;
- the verdict as tags, each backend in its own spelling (``trackcheck.status`` in MLflow,
  ``sanity:failed`` in W&B).

Call order (what ``log_report`` does): ``start`` -> ``log_*`` -> ``set_verdict`` ->
``finish``. A backend may buffer the ``log_*`` calls and write them in ``set_verdict``; a
``finish`` without ``set_verdict`` (an interrupt) writes whatever was buffered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from trackcheck.core import Report

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]  # MLflow's names; W&B maps them to exit codes
PREFIX = "sanity"
PASSED_KEY = f"{PREFIX}/passed"  # the gate's verdict: 1.0/0.0 as a metric, a bool as a summary


class TrackerError(RuntimeError):
    """The tracker cannot be used as configured (unreachable server, missing SDK, ...)."""


@runtime_checkable
class Tracker(Protocol):
    def start(self, config: dict[str, Any], run_name: str) -> None:
        """Open a run (or attach to the caller's active run) and record the config."""

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """The stage's scalars, one value per key."""

    def log_series(self, series: dict[str, list[tuple[int, float]]], step_key: str) -> None:
        """One check's series: ``key -> [(step, value), ...]``, all on the x-axis ``step_key``."""

    def log_image(self, key: str, path: Path) -> None: ...

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def log_html(self, key: str, path: Path) -> None:
        """A self-contained HTML page the tracker's UI can show."""

    def log_file(self, path: Path, folder: str = "") -> None: ...

    def set_verdict(self, report: Report) -> None:
        """Tags and summary keys that let a person filter runs by the stage's outcome."""

    def finish(self, status: RunStatus) -> None:
        """End the run with this status (an attached run is left open for its owner)."""

    def info(self) -> dict[str, Any]:
        """Where the run lives: ids, URLs, folders (recorded in report.json)."""


# --- the naming scheme ------------------------------------------------------------------
def check_key(check: str, name: str) -> str:
    return f"{PREFIX}/{check}/{name}"


def step_key(check: str) -> str:
    return f"{PREFIX}/{check}/step"


def figure_key(check: str, name: str, taken: set[str]) -> str:
    """``sanity/<check>/<name>``, suffixed when a metric or series already uses that key."""
    key = check_key(check, name)
    return f"{key}_figure" if key in taken else key


SUMMARY_COLUMNS = ["check", "status", "value", "threshold", "message", "duration_s"]


def summary_rows(report: Report) -> list[list[Any]]:
    return [
        [c.name, c.status.value, c.value, c.threshold, c.message, round(c.duration_s, 3)]
        for c in report.checks
    ]


def scalars(report: Report) -> dict[str, float]:
    """Every check's metrics and duration, and ``sanity/passed`` (1.0 or 0.0)."""
    out: dict[str, float] = {PASSED_KEY: float(report.passed)}
    for c in report.checks:
        for k, v in c.metrics.items():
            out[check_key(c.name, k)] = float(v)
        out[check_key(c.name, "duration_s")] = float(c.duration_s)
    return out


def log_report(tracker: Tracker, report: Report, files: list[Path] | None = None) -> None:
    """Map a finished Report onto a tracker.

    ``files`` are report.json and report.html (already on disk): HTML pages go through
    ``log_html`` under ``sanity/report``, the rest are attached as files under ``sanity/``.
    """
    metrics = scalars(report)
    tracker.log_metrics(metrics)
    for c in report.checks:
        series = {check_key(c.name, k): pts for k, pts in c.series.items() if pts}
        if series:
            tracker.log_series(series, step_key(c.name))
        taken = set(metrics) | set(series)
        for k, path in c.figures.items():
            if Path(path).is_file():
                tracker.log_image(figure_key(c.name, k, taken), Path(path))
        for k, tab in c.tables.items():
            tracker.log_table(check_key(c.name, k), list(tab["columns"]), list(tab["rows"]))
    tracker.log_table(f"{PREFIX}/summary", SUMMARY_COLUMNS, summary_rows(report))
    for f in files or []:
        if f.suffix == ".html":
            tracker.log_html(f"{PREFIX}/report", f)
        else:
            tracker.log_file(f, PREFIX)
    tracker.set_verdict(report)


class NoTracker:
    """``tracker=none``: report.json, report.html and figures on disk only."""

    def start(self, config: dict[str, Any], run_name: str) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float]) -> None:
        pass

    def log_series(self, series: dict[str, list[tuple[int, float]]], step_key: str) -> None:
        pass

    def log_image(self, key: str, path: Path) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def log_html(self, key: str, path: Path) -> None:
        pass

    def log_file(self, path: Path, folder: str = "") -> None:
        pass

    def set_verdict(self, report: Report) -> None:
        pass

    def finish(self, status: RunStatus) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"backend": "none"}
