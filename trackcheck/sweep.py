"""Hydra multirun (``-m``): each job's verdict, the sweep's summary, the tracker grouping.

How ``python -m trackcheck -m +model=resnet optim.lr=1e-4,1e-3,1e-2`` runs:

1. ``SweepCallback.on_multirun_start`` (the main process, before any job starts) picks the
   sweep id, creates the MLflow database, experiment and a parent run once, and writes
   ``<sweep_dir>/.trackcheck/sweep.json``. Parallel jobs then never race on a fresh sqlite
   file (12 processes opening one all failed; with the database and experiment made first,
   12 of 12 succeeded: see DESIGN.md).
2. Each job (``cli.hydra_main``, in whatever process or node the launcher picks) reads
   sweep.json, logs a child run of the parent (MLflow) or a run in the sweep's group (W&B),
   writes its ``JobRecord`` to ``<sweep_dir>/.trackcheck/jobs/<num>.json`` and RETURNS its
   value instead of raising: Hydra's BasicSweeper re-raises a job's exception after the
   batch and then skips ``on_multirun_end``, which would lose the summary.
3. ``SweepCallback.on_multirun_end`` (the main process) gathers the records into
   ``<sweep_dir>/multirun_report.json``, prints the table, closes the parent run and keeps
   the summary for ``cli.main``, which turns it into the exit code.

Everything passes through files in the sweep dir, so it works for any launcher whose jobs
see that dir (local, joblib, submitit on a shared file system).

This module is the sweep's bookkeeping; which backend a job logs to is decided by
``trackers.backend_of``, and what a backend does for a sweep (MLflow's parent run, W&B's
group) is that backend's own code (``trackers.mlflow``, ``trackers.wandb``).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trackcheck.core import Report
from trackcheck.names import BACKEND_MLFLOW, BACKEND_WANDB, ERROR, FAILED, PASSED, SKIPPED
from trackcheck.trackers import _mlflow_sweep, backend_of
from trackcheck.trackers import wandb as wandb_tracker

STATE_DIR = ".trackcheck"  # inside the sweep dir, beside Hydra's multirun.yaml
REPORT_NAME = "multirun_report.json"
SCHEMA_VERSION = 1


# --- what the jobs share ----------------------------------------------------------------------
@dataclass
class SweepContext:
    """Written once by the main process before any job starts; read by every job."""

    sweep_id: str
    sweep_dir: str
    # set when the sweep logs to MLflow: configured_uri (as the config spells it),
    # tracking_uri (absolute), experiment_id, parent_run_id
    mlflow: dict[str, str] | None = None


@dataclass
class JobRecord:
    """One job's verdict, as the summary table and multirun_report.json show it."""

    num: int
    overrides: list[str]
    status: str = ERROR  # passed | failed | error | skipped
    failed_checks: list[str] = field(default_factory=list)
    run_id: str | None = None  # the tracker's run (MLflow run id, W&B run id)
    output_dir: str = ""
    message: str = ""  # why it failed, crashed or was skipped, in one line

    def set_report(self, report: Report) -> None:
        self.status = PASSED if report.passed else FAILED
        self.failed_checks = list(report.gated_on)
        self.run_id = report.tracker.get("run_id")
        if not report.passed:
            self.message = "; ".join(
                f"{c.name}: {c.message}" for c in report.checks if c.name in report.gated_on
            )

    @property
    def passed(self) -> bool:
        return self.status == PASSED


@dataclass
class SweepSummary:
    sweep_id: str
    sweep_dir: str
    jobs: list[JobRecord]
    tracker: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.jobs) and all(j.passed for j in self.jobs)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in (PASSED, FAILED, ERROR, SKIPPED)}
        for j in self.jobs:
            out[j.status] = out.get(j.status, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "sweep_id": self.sweep_id,
            "sweep_dir": self.sweep_dir,
            "status": PASSED if self.passed else FAILED,
            "counts": self.counts(),
            "tracker": self.tracker,
            "jobs": [asdict(j) for j in self.jobs],
        }


def state_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / STATE_DIR


def new_sweep_id(job_name: str) -> str:
    """``trackcheck-20261126-144627-3fa2c1``: readable, sortable, unique across machines."""
    return f"{job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def write_context(ctx: SweepContext) -> None:
    path = state_dir(ctx.sweep_dir) / "sweep.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(ctx), indent=2))


def read_context(sweep_dir: str | Path) -> SweepContext | None:
    """None when no SweepCallback ran (a user who replaced ``hydra.callbacks``)."""
    path = state_dir(sweep_dir) / "sweep.json"
    if not path.exists():
        return None
    return SweepContext(**json.loads(path.read_text()))


# --- per-job records and fail-fast ------------------------------------------------------------
def save_job(sweep_dir: str | Path, record: JobRecord, fail_fast: bool = False) -> None:
    """Write the job's record; with ``fail_fast``, a failure tells later jobs to skip."""
    jobs = state_dir(sweep_dir) / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    # write then rename: a summary read while a parallel job writes never sees half a file
    tmp = jobs / f".{record.num}.json.tmp"
    tmp.write_text(json.dumps(asdict(record), indent=2))
    tmp.replace(jobs / f"{record.num}.json")
    if fail_fast and record.status in (FAILED, ERROR):
        stop = state_dir(sweep_dir) / "stop"
        if not stop.exists():
            stop.write_text(str(record.num))


def stop_requested(sweep_dir: str | Path) -> int | None:
    """The number of the job whose failure stopped a fail-fast sweep, or None."""
    stop = state_dir(sweep_dir) / "stop"
    return int(stop.read_text()) if stop.exists() else None


def read_jobs(sweep_dir: str | Path) -> list[JobRecord]:
    jobs = state_dir(sweep_dir) / "jobs"
    records = [JobRecord(**json.loads(p.read_text())) for p in jobs.glob("*.json")]
    return sorted(records, key=lambda r: r.num)


def job_value(record: JobRecord, failed_value: Any, train_result: Any = None) -> Any:
    """What the job function returns to the sweeper.

    A failed, crashed or skipped job returns ``failed_value`` (inf by default): Optuna and the
    other optimising sweepers read a job's return value as its objective, so the worst value
    steers the search away from broken configs. A passing job returns the training
    function's result (its objective), or the word ``passed`` when no ``train`` is set.
    """
    if not record.passed:
        return failed_value
    return train_result if train_result is not None else PASSED


# --- the tracker grouping ---------------------------------------------------------------------
def tracker_args(node: Any, ctx: SweepContext | None) -> dict[str, Any]:
    """Keyword arguments a job's tracker gets from the sweep, on top of its config.

    MLflow: the parent run, experiment id and absolute store (only when the job logs to the
    store the parent lives in). W&B: ``group`` = the sweep id and ``job_type`` = ``sanity``,
    unless the config sets them.
    """
    if ctx is None or node is None:
        return {}
    backend = backend_of(node)
    if backend == BACKEND_MLFLOW and ctx.mlflow:
        return _mlflow_sweep.sweep_job_args(node, ctx.sweep_id, ctx.mlflow)
    if backend == BACKEND_WANDB:
        return wandb_tracker.sweep_job_args(node, ctx.sweep_id)
    return {}


# --- the summary ------------------------------------------------------------------------------
def summarize(ctx: SweepContext) -> SweepSummary:
    tracker = {"backend": BACKEND_MLFLOW, **ctx.mlflow} if ctx.mlflow else {}
    return SweepSummary(ctx.sweep_id, ctx.sweep_dir, read_jobs(ctx.sweep_dir), tracker)


def write_summary(summary: SweepSummary) -> Path:
    path = Path(summary.sweep_dir) / REPORT_NAME
    path.write_text(json.dumps(summary.to_json(), indent=2))
    return path


def print_summary(summary: SweepSummary, path: Path) -> None:
    from rich.markup import escape
    from rich.table import Table

    from trackcheck.console import console

    style = {PASSED: "green", FAILED: "bold red", ERROR: "bold magenta", SKIPPED: "dim"}
    verdict = (PASSED if summary.passed else FAILED).upper()
    t = Table(title=f"trackcheck sweep {summary.sweep_id}: {verdict}")
    for col in ("job", "overrides", "status", "failed checks", "run id"):
        t.add_column(col, overflow="fold")
    for j in summary.jobs:
        why = ", ".join(j.failed_checks) or (j.message if j.status in (ERROR, SKIPPED) else "")
        t.add_row(
            str(j.num),
            escape(" ".join(j.overrides)),  # `checks.run=[a,b]` is not rich markup
            f"[{style.get(j.status, '')}]{j.status}[/]",
            escape(why),
            j.run_id or "",
        )
    console.print(t)
    counts = ", ".join(f"{n} {s}" for s, n in summary.counts().items() if n)
    console.print(f"sweep: {counts or 'no job recorded a verdict'}; report: {path}")


_last_summary: SweepSummary | None = None


def take_summary() -> SweepSummary | None:
    """The summary of the sweep that just ended in this process (once), for the exit code."""
    global _last_summary
    summary, _last_summary = _last_summary, None
    return summary


class SweepCallback(Callback):
    """trackcheck's own multirun bookkeeping (configured in conf/config.yaml's hydra.callbacks)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = str(Path(config.hydra.sweep.dir).absolute())
        # a reused sweep dir must not mix an earlier sweep's records or stop flag into this one
        shutil.rmtree(state_dir(sweep_dir), ignore_errors=True)
        sweep_id = OmegaConf.select(config, "sweep.id") or new_sweep_id(config.hydra.job.name)
        ctx = SweepContext(sweep_id=str(sweep_id), sweep_dir=sweep_dir)
        # written before the tracker is touched: Hydra turns a callback's exception into a
        # warning, and the summary must not depend on the MLflow store being reachable
        write_context(ctx)
        tracker = OmegaConf.select(config, "tracker")
        if backend_of(tracker) == BACKEND_MLFLOW:
            ctx.mlflow = _mlflow_sweep.open_parent_run(tracker, ctx.sweep_id, ctx.sweep_dir)
            write_context(ctx)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _last_summary
        ctx = read_context(Path(config.hydra.sweep.dir).absolute())
        if ctx is None:
            return
        summary = summarize(ctx)
        _last_summary = summary  # the exit code, even if closing the parent run fails below
        path = write_summary(summary)
        print_summary(summary, path)
        if ctx.mlflow:
            failed = [j.num for j in summary.jobs if not j.passed]
            _mlflow_sweep.close_parent_run(
                ctx.mlflow, summary.passed, summary.counts(), failed, path
            )
