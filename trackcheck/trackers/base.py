"""The tracker protocol and the one function that maps a Report onto any tracker.

A tracker is thin: it knows its SDK (imported lazily) and nothing about checks. The naming
scheme lives here, once: ``sanity/<check>/<metric>`` for numbers and series,
``sanity/<check>/<figure>`` for pictures, tags ``trackcheck.status`` /
``trackcheck.check.<check>`` (each backend spells tags its own way).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from trackcheck.core import Report

RunStatus = str  # "FINISHED" | "FAILED" | "KILLED"


@runtime_checkable
class Tracker(Protocol):
    def start(self, config: dict[str, Any], run_name: str) -> None:
        """Open a run (or attach to the caller's active run) and record the config."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_series(self, key: str, points: list[tuple[int, float]]) -> None:
        """One metric over its own steps (each check's series has its own x-axis)."""

    def log_image(self, key: str, path: Path) -> None: ...

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None: ...

    def log_file(self, path: Path, folder: str = "") -> None: ...

    def set_verdict(self, report: Report) -> None:
        """Tags and summary keys that let a person filter runs by the stage's outcome."""

    def finish(self, status: RunStatus) -> None: ...

    def info(self) -> dict[str, Any]:
        """Where the run lives: ids, URLs, folders (recorded in report.json)."""


def summary_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    cols = ["check", "status", "value", "threshold", "message", "duration_s"]
    rows = [
        [c.name, c.status.value, c.value, c.threshold, c.message, round(c.duration_s, 3)]
        for c in report.checks
    ]
    return cols, rows


def log_report(tracker: Tracker, report: Report, files: list[Path] | None = None) -> None:
    """Map a finished Report onto a tracker; ``files`` (report.json, report.html) go last."""
    scalars: dict[str, float] = {"sanity/passed": float(report.passed)}
    for c in report.checks:
        for k, v in c.metrics.items():
            scalars[f"sanity/{c.name}/{k}"] = float(v)
        scalars[f"sanity/{c.name}/duration_s"] = c.duration_s
    tracker.log_metrics(scalars)
    for c in report.checks:
        for k, pts in c.series.items():
            tracker.log_series(f"sanity/{c.name}/{k}", pts)
        for k, path in c.figures.items():
            tracker.log_image(f"sanity/{c.name}/{k}", Path(path))
        for k, tab in c.tables.items():
            tracker.log_table(f"sanity/{c.name}/{k}", list(tab["columns"]), list(tab["rows"]))
    tracker.log_table("sanity/summary", *summary_rows(report))
    tracker.set_verdict(report)
    for f in files or []:
        tracker.log_file(f, "sanity")


class NoTracker:
    """``tracker=none``: report.json and figures on disk only."""

    def start(self, config: dict[str, Any], run_name: str) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_series(self, key: str, points: list[tuple[int, float]]) -> None:
        pass

    def log_image(self, key: str, path: Path) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def log_file(self, path: Path, folder: str = "") -> None:
        pass

    def set_verdict(self, report: Report) -> None:
        pass

    def finish(self, status: RunStatus) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"backend": "none"}


def to_jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
