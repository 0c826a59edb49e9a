"""What the sweep tests of every launcher read back: the sweep's summary and its MLflow runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trackcheck import sweep


def summary_of(cwd: Path) -> dict[str, Any]:
    """The sweep's multirun_report.json, under ``cwd/sweep``."""
    return json.loads((cwd / "sweep" / sweep.REPORT_NAME).read_text())


def assert_jobs_are_children_with_their_verdicts(store: str, summary: dict[str, Any]) -> None:
    """One FAILED parent run (no crashed job) whose children carry each job's verdict."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    parent = client.get_run(summary["tracker"]["parent_run_id"])
    assert parent.info.status == "FAILED" and parent.data.tags["trackcheck.failed_jobs"] == "0"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    verdicts = {r.info.run_id: r.data.tags["trackcheck.status"] for r in children}
    assert verdicts == {j["run_id"]: j["status"] for j in summary["jobs"]}
