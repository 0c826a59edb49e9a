"""The tracker protocol, the one function that maps a Report onto any tracker, and what a
tracker's run says when it is read back (``RunVerdict``, for the gate).

A tracker is thin: it knows its SDK (imported lazily) and nothing about checks. The names it
writes live in :mod:`trackcheck.names` and are the same in every backend:

- charted, so that a run's charts are the ones worth reading: a check's series
  ``sanity/<check>/<series>`` (each plotted against ``sanity/<check>/step``, its own
  x-axis); W&B names its panels ``sanity-<check>/...`` (a section per check) and draws a
  check's compared series together too (``compared``); no single value is charted:
  ``sanity/passed`` and each check's headline number ``sanity/value/<check>`` are W&B
  summary keys (MLflow: the ``trackcheck.status`` tag, the value column of
  ``sanity/summary``);
- every other scalar, ``sanity/<check>/<metric>`` and ``.../duration_s``, in the table
  ``sanity/metrics`` (check, metric, value) and report.json (W&B: the run summary too);
- ``sanity/<check>/<figure>``: a check's pictures (``<figure>_figure`` when the name is also
  one of the check's metrics, e.g. loss_decreases' ``loss`` curve and its ``loss`` series);
- ``sanity/<check>/<table>``, ``sanity/summary`` (one row per check), ``sanity/report``
  (the HTML page);
- the verdict as tags, each backend in its own spelling (``trackcheck.status`` in MLflow,
  ``sanity:failed`` in W&B).

Call order (what the runner and ``log_report`` do): ``start`` -> ``log_*`` ->
``set_verdict`` -> ``finish``. A backend may buffer the ``log_*`` calls and write them in
``set_verdict``; a ``finish`` without ``set_verdict`` (an interrupt) writes whatever was
buffered.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from trackcheck.core import Report, Status
from trackcheck.names import (
    BACKEND_NONE,
    METRICS_KEY,
    PASSED,
    PASSED_KEY,
    PREFIX,
    REPORT_KEY,
    SUMMARY_KEY,
    RunStatus,
    check_key,
    figure_key,
    step_key,
    value_key,
)

__all__ = [
    "BAD_CHECK",
    "EXPLAINED",
    "METRICS_COLUMNS",
    "SUMMARY_COLUMNS",
    "FileKind",
    "NoTracker",
    "RunStatus",
    "RunVerdict",
    "Tracker",
    "TrackerError",
    "WARN_CHECK",
    "check_key",
    "compared",
    "explain",
    "figure_key",
    "log_report",
    "headline",
    "log_results",
    "metrics_rows",
    "scalars",
    "split_gated",
    "step_key",
    "summary_rows",
]

# how a UI shows a file: a picture, an HTML page it renders, or an attachment
FileKind = Literal["image", "html", "file"]


class TrackerError(RuntimeError):
    """The tracker cannot be used as configured (unreachable server, missing SDK, ...)."""


@runtime_checkable
class Tracker(Protocol):
    """What a backend implements: nine methods, each for something no other one carries.

    - ``start``: open (or attach to) the run before any compute, so a bad URI fails fast;
    - ``log_metrics``: single values at no step (the verdict, the headline values), kept
      where they make no one-point chart (W&B's run summary; MLflow: not at all);
      ``log_series``: values over a check's own x-axis. Two methods, because W&B drops a
      row logged below the run's current step: a series needs
      ``define_metric(step_metric=...)``, a single value must not get one;
    - ``log_table``: each backend has its own table type (``wandb.Table``, MLflow's JSON
      table);
    - ``log_file``: any file already on disk (a figure, the HTML page, report.json), one
      method with a ``kind`` instead of three: the backends differ only in how they show it;
    - ``set_verdict``: the tags and summary keys people filter by, written last; not part of
      ``finish``, since an interrupted stage ends its run without a verdict;
    - ``finish``: the run's end status, the one call made on every path (FAILED, KILLED);
    - ``info``: where the run lives, recorded in report.json before the run is logged;
    - ``activate``: lends the run to the caller's code (training after a passing gate).
    """

    def start(self, config: dict[str, Any], run_name: str) -> None:
        """Open a run (or attach to the caller's active run) and record the config."""

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """The stage's scalars, one value per key."""

    def log_series(self, series: dict[str, list[tuple[int, float]]], step_key: str) -> None:
        """One check's series: ``key -> [(step, value), ...]``, all on the x-axis ``step_key``."""

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        """A table (the summary, a check's per-class numbers) in the backend's table type."""

    def log_file(self, key: str, path: Path, kind: FileKind = "file") -> None:
        """A file on disk, named ``key`` + its suffix: a picture, a page, or an attachment."""

    def set_verdict(self, report: Report) -> None:
        """Tags and summary keys that let a person filter runs by the stage's outcome."""

    def finish(self, status: RunStatus) -> None:
        """End the run with this status (an attached run is left open for its owner)."""

    def info(self) -> dict[str, Any]:
        """Where the run lives: ids, URLs, folders (recorded in report.json)."""

    def activate(self) -> AbstractContextManager[None]:
        """A context in which the SDK's own calls (``mlflow.log_metric``, ``wandb.log``)
        land in this run: the user's training after a passing gate."""


# --- the Report, mapped onto any tracker ------------------------------------------------
SUMMARY_COLUMNS = ["check", "status", "value", "threshold", "message", "duration_s"]


def summary_rows(report: Report) -> list[list[Any]]:
    return [
        [c.name, c.status.value, c.value, c.threshold, c.message, round(c.duration_s, 3)]
        for c in report.checks
    ]


METRICS_COLUMNS = ["check", "metric", "value"]


def headline(report: Report) -> dict[str, float]:
    """The stage's single numbers: ``sanity/passed`` (1.0 or 0.0) and each check's one
    value, ``sanity/value/<check>`` (the summary table's value column). Never charted: W&B
    keeps them in the run summary; MLflow, which charts every metric, not as metrics."""
    out: dict[str, float] = {PASSED_KEY: float(report.passed)}
    for c in report.checks:
        if isinstance(c.value, int | float):  # a skipped or crashed check has none
            out[value_key(c.name)] = float(c.value)
    return out


def scalars(report: Report) -> dict[str, float]:
    """Every check's other numbers, ``sanity/<check>/<metric>``, and its ``duration_s``:
    looked up (report.json, the ``sanity/metrics`` table, W&B's run summary), not charted,
    since a chart of one value per run buries the curves."""
    out: dict[str, float] = {}
    for c in report.checks:
        for k, v in c.metrics.items():
            out[check_key(c.name, k)] = float(v)
        out[check_key(c.name, "duration_s")] = float(c.duration_s)
    return out


def metrics_rows(report: Report) -> list[list[Any]]:
    """``scalars`` as (check, metric, value) rows: the ``sanity/metrics`` table."""
    return [
        [c.name, k, float(v)]
        for c in report.checks
        for k, v in [*c.metrics.items(), ("duration_s", c.duration_s)]
    ]


def compared(series: dict[str, list[tuple[int, float]]]) -> str | None:
    """The word a check's series all share, when it has two or more of them (``loss`` of
    ``loss_run1``, ``loss_run2``; ``train_loss`` of ``train_loss_real``,
    ``train_loss_blanked``): the series measure one thing under the conditions the check
    compares, so a backend that can draw several series in one chart draws them together
    (W&B). None when they measure different things (``loss`` and ``lr``)."""
    if len(series) < 2:
        return None
    names = [k.rsplit("/", 1)[-1].split("_") for k in series]
    shared = [w for w in names[0] if all(w in n for n in names[1:])]
    return "_".join(shared) or None


def log_report(tracker: Tracker, report: Report, files: list[Path] | None = None) -> None:
    """Map a finished Report onto a tracker: its results, then its verdict."""
    log_results(tracker, report, files)
    tracker.set_verdict(report)


def log_results(tracker: Tracker, report: Report, files: list[Path] | None = None) -> None:
    """Everything the checks that finished measured (metrics, series, figures, tables, the
    summary, the report files), without the verdict: an interrupted stage's run gets this
    and no verdict.

    ``files`` are report.json and report.html (already on disk): the HTML page goes under
    ``sanity/report`` as a page, the rest are attached under ``sanity/``.
    """
    values = headline(report)
    tracker.log_metrics(values)
    taken = set(values) | set(scalars(report))  # figure keys never shadow a number's key
    for c in report.checks:
        series = {check_key(c.name, k): pts for k, pts in c.series.items() if pts}
        if series:
            tracker.log_series(series, step_key(c.name))
        taken |= set(series)
        for k, path in c.figures.items():
            if Path(path).is_file():
                tracker.log_file(figure_key(c.name, k, taken), Path(path), "image")
        for k, tab in c.tables.items():
            tracker.log_table(check_key(c.name, k), list(tab["columns"]), list(tab["rows"]))
    tracker.log_table(SUMMARY_KEY, SUMMARY_COLUMNS, summary_rows(report))
    tracker.log_table(METRICS_KEY, METRICS_COLUMNS, metrics_rows(report))
    for f in files or []:
        if f.suffix == ".html":
            tracker.log_file(REPORT_KEY, f, "html")
        else:
            tracker.log_file(f"{PREFIX}/{f.stem}", f, "file")


class NoTracker:
    """``tracker=none``: report.json, report.html and figures on disk only.

    Example (the reports in ./sanity, no tracker run)::

        import os

        import trackcheck
        from trackcheck.data import digits
        from trackcheck.models import ResNet
        from trackcheck.trackers.base import NoTracker

        report = trackcheck.run(
            lambda: ResNet([1, 8, 8], 10),
            digits(),
            checks=["loss_at_init"],
            tracker=NoTracker(),
            output_dir="sanity",
        )
        print(report.status, sorted(os.listdir(report.output_dir)))  # ... report.json ...
    """

    def start(self, config: dict[str, Any], run_name: str) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float]) -> None:
        pass

    def log_series(self, series: dict[str, list[tuple[int, float]]], step_key: str) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        pass

    def log_file(self, key: str, path: Path, kind: FileKind = "file") -> None:
        pass

    def set_verdict(self, report: Report) -> None:
        pass

    def finish(self, status: RunStatus) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {"backend": BACKEND_NONE}

    def activate(self) -> AbstractContextManager[None]:
        return nullcontext()


# --- a run read back: the gate's view of it -----------------------------------------------
# check statuses listed as failed (whether warn gated is the report's own verdict)
BAD_CHECK = (Status.FAIL.value, Status.ERROR.value)
WARN_CHECK = Status.WARN.value
# checks whose message a tracker keeps with the verdict (tag, summary key), for the gate
EXPLAINED = (*BAD_CHECK, WARN_CHECK)


def split_gated(gated_on: list[str], statuses: dict[str, str]) -> tuple[list[str], list[str]]:
    """The checks a gate failed on, as (failed, warned): a check whose status is ``warn``
    is a warning that ``fail_on_warn`` made fatal; anything else (fail, error, or a name
    that is no check, such as ``interrupted``) failed."""
    warned = [c for c in gated_on if statuses.get(c) == WARN_CHECK]
    return [c for c in gated_on if c not in warned], warned


def explain(checks: list[str], messages: dict[str, str]) -> str:
    """``check: message; ...`` for the checks that have a message."""
    return "; ".join(f"{c}: {messages[c]}" for c in checks if messages.get(c))


@dataclass
class RunVerdict:
    """One run's verdict as a tracker's reader (or the gate's report.json reader) sees it."""

    run: str  # what a person recognises: the run's name, or the job's folder and overrides
    where: str  # where it lives: an MLflow/W&B run id, or the report.json path
    status: str  # passed | failed | error (crashed, no verdict) | running (no verdict yet)
    failed_checks: list[str] = field(default_factory=list)  # fail/error (or interrupted)
    # warn, listed when the gate failed on it (gate.fail_on_warn): a warning, not a failure
    warned_checks: list[str] = field(default_factory=list)
    detail: str = ""  # why: each listed check's message, or why there is no verdict

    @property
    def passed(self) -> bool:
        return self.status == PASSED
