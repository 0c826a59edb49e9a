"""MLflow backend: one run per stage (or the caller's active run), written in batches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trackcheck.core import Report
from trackcheck.redact import flatten
from trackcheck.trackers.base import RunStatus

DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow 3's own default: `mlflow ui` in this folder shows it
PARAM_MAX = 6000  # MLflow rejects longer param values
BATCH = 500  # rows per log_batch call (MLflow accepts 1000 metrics per call)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as e:  # pragma: no cover - mlflow is a dependency
        raise ImportError(
            "tracker=mlflow needs MLflow: pip install mlflow (or use tracker=none)"
        ) from e
    return mlflow


class MLflowTracker:
    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "trackcheck",
        experiment_id: str | None = None,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
        attach: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri or DEFAULT_URI
        self.experiment_name = experiment_name
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.attach = attach  # log into the caller's active run when there is one
        self.attached = False
        self.run_id: str | None = None
        self._client: Any = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, config: dict[str, Any], run_name: str) -> None:
        mlflow = _mlflow()
        active = mlflow.active_run() if self.attach else None
        if active is not None:
            # trackcheck called from the user's training script: their run, their URI
            self._client = mlflow.MlflowClient()
            self.run_id, self.attached = active.info.run_id, True
        else:
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
            exp_id = self.experiment_id or self._experiment_id()
            tags = {"mlflow.runName": self.run_name or run_name, **self.tags}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            self.run_id = self._client.create_run(exp_id, tags=tags).info.run_id
        self._log_params(config)

    def _experiment_id(self) -> str:
        exp = self._client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(self._client.create_experiment(self.experiment_name))
        except Exception:  # created by a parallel job between our two calls
            return str(self._client.get_experiment_by_name(self.experiment_name).experiment_id)

    def _log_params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        prefix = "sanity." if self.attached else ""  # never clash with the user's own params
        flat = flatten(config)
        params = [Param(f"{prefix}{k}", str(v)[:PARAM_MAX]) for k, v in flat.items() if k]
        for i in range(0, len(params), 100):
            self._client.log_batch(self.run_id, params=params[i : i + 100])

    def finish(self, status: RunStatus) -> None:
        if self._client is None or self.run_id is None:
            return
        if not self.attached:  # the caller's run stays open: they end it
            self._client.set_terminated(self.run_id, status)

    # --- logging --------------------------------------------------------------------------
    def _log_metric_rows(self, rows: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(s)) for k, v, s in rows]
        for i in range(0, len(metrics), BATCH):
            self._client.log_batch(self.run_id, metrics=metrics[i : i + BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._log_metric_rows([(k, v, step or 0) for k, v in metrics.items()])

    def log_series(self, key: str, points: list[tuple[int, float]]) -> None:
        self._log_metric_rows([(key, v, s) for s, v in points])

    def log_image(self, key: str, path: Path) -> None:
        self._client.log_artifact(self.run_id, str(path), str(Path(key).parent))

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
        self._client.log_table(self.run_id, data=data, artifact_file=f"{key}.json")

    def log_file(self, path: Path, folder: str = "") -> None:
        self._client.log_artifact(self.run_id, str(path), folder or None)

    def set_verdict(self, report: Report) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag("trackcheck.status", report.status)]
        tags += [RunTag(f"trackcheck.check.{c.name}", c.status.value) for c in report.checks]
        if report.gated_on:
            tags.append(RunTag("trackcheck.failed_checks", ",".join(report.gated_on)))
        self._client.log_batch(self.run_id, tags=tags)

    def info(self) -> dict[str, Any]:
        return {
            "backend": "mlflow",
            "tracking_uri": self.tracking_uri if not self.attached else "active run",
            "run_id": self.run_id,
            "attached": self.attached,
        }
