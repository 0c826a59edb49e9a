"""MLflow backend: one run per stage (or the caller's active run), written in batches.

Everything goes through ``MlflowClient`` (never the fluent ``mlflow.start_run``), so the
stage neither needs nor leaves a process-wide active run: jobs of a Hydra multirun that
share a process cannot leak runs into each other.

Where things land (the same keys as in W&B, see ``trackers.base``):
- params: the resolved, redacted config, flattened (``optim.lr``); ``sanity.`` prefixed when
  logging into the caller's run, so they cannot clash with the caller's own params;
- metrics: ``sanity/<check>/<metric>`` at step 0, series with their own steps;
- artifacts: ``sanity/<check>/<figure>.png``, ``sanity/summary.json`` (a table),
  ``sanity/report.html``, ``sanity/report.json``;
- tags: ``trackcheck.status`` (passed|failed), ``trackcheck.check.<check>`` (pass|warn|...),
  ``trackcheck.failed_checks``; the run's description (``mlflow.note.content``) is the
  summary table in Markdown, shown on the run's page;
- status: FINISHED, FAILED when the gate fails, KILLED on an interrupt.
"""

from __future__ import annotations

import getpass
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from trackcheck.core import Report
from trackcheck.redact import flatten
from trackcheck.trackers.base import SUMMARY_COLUMNS, RunStatus, TrackerError, summary_rows

DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow 3's own default: `mlflow ui` in this folder shows it
PARAM_MAX = 6000  # MLflow rejects longer param values
# rows per log_batch call: MLflow's documented limits are 1000 metrics, 100 params, 100 tags
METRICS_PER_BATCH, PARAMS_PER_BATCH, TAGS_PER_BATCH = 1000, 100, 100
PROBE_TIMEOUT_S = 5.0  # a server that does not answer /health in 5 s is treated as down


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as e:
        raise TrackerError(
            "tracker=mlflow needs MLflow: pip install mlflow (or use tracker=none)"
        ) from e
    return mlflow


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail in seconds, not minutes, on an http(s) tracking URI that nobody answers.

    MLflow's client retries a dead server for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES with
    exponential backoff); one GET of the server's ``/health`` tells us first.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 behind a proxy that wants auth): MLflow will say more
    except (OSError, ValueError) as e:
        raise TrackerError(
            f"cannot reach the MLflow server at {uri} ({e}). Start it with "
            "`mlflow server --host 127.0.0.1 --port 5000`, fix tracker.tracking_uri, or log "
            f"to the local store with tracker.tracking_uri={DEFAULT_URI}"
        ) from e


def markdown_summary(report: Report) -> str:
    """The summary table as Markdown: MLflow shows it as the run's description."""

    def cell(v: Any) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else str("" if v is None else v)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"**trackcheck: {report.status}**", ""]
    lines.append("| " + " | ".join(SUMMARY_COLUMNS) + " |")
    lines.append("|" + "---|" * len(SUMMARY_COLUMNS))
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in summary_rows(report)]
    return "\n".join(lines)


class MLflowTracker:
    """Log the sanity stage to MLflow (``tracker=mlflow``).

    ``tracking_uri``: ``sqlite:///mlflow.db`` (default), ``http://host:5000`` or any MLflow
    URI. ``experiment_id`` (set by a sweep that created the experiment up front) wins over
    ``experiment_name``. With ``attach`` and an active fluent run in this process (trackcheck
    called from the user's training script), the stage logs into that run and leaves it open.
    """

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
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.attach = attach
        self.attached = False
        self.run_id: str | None = None
        self._client: Any = None
        self._metrics: list[Any] = []  # mlflow.entities.Metric rows, written in set_verdict

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, config: dict[str, Any], run_name: str) -> None:
        mlflow = _mlflow()
        active = mlflow.active_run() if self.attach else None
        if active is not None:
            # trackcheck called from the user's training script: their run, their URI
            self.tracking_uri = mlflow.get_tracking_uri()
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
            self.run_id, self.attached = active.info.run_id, True
            self.experiment_id = active.info.experiment_id
        else:
            probe_server(self.tracking_uri)
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
            self.experiment_id = self.experiment_id or self._experiment_id()
            tags = {"mlflow.user": _user(), **self.tags}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run = self._client.create_run(
                self.experiment_id, tags=tags, run_name=self.run_name or run_name
            )
            self.run_id = run.info.run_id
        self._log_params(config)

    def _experiment_id(self) -> str:
        exp = self._client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(self._client.create_experiment(self.experiment_name))
        except Exception:  # created by a parallel job between our two calls
            exp = self._client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def _log_params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        prefix = "sanity." if self.attached else ""  # never clash with the caller's params
        flat = flatten(config)
        params = [Param(f"{prefix}{k}", str(v)[:PARAM_MAX]) for k, v in flat.items() if k]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=params[i : i + PARAMS_PER_BATCH])

    def finish(self, status: RunStatus) -> None:
        if self._client is None or self.run_id is None:
            return
        self._flush_metrics()
        if self.attached:  # the caller's run stays open: they end it
            print(
                f"mlflow: sanity stage {status.lower()}, logged into the active run {self.run_id}",
                file=sys.stderr,
            )
            return
        self._client.set_terminated(self.run_id, status)
        print(
            f"mlflow: run {self.run_id} ({status}) in {self.tracking_uri}; "
            f"view: {self.info()['view']}",
            file=sys.stderr,
        )

    # --- logging --------------------------------------------------------------------------
    def _add_metrics(self, rows: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._metrics += [Metric(k, float(v), now, int(s)) for k, v, s in rows]

    def _flush_metrics(self) -> None:
        rows, self._metrics = self._metrics, []
        for i in range(0, len(rows), METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=rows[i : i + METRICS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self._add_metrics([(k, v, 0) for k, v in metrics.items()])

    def log_series(self, series: dict[str, list[tuple[int, float]]], step_key: str) -> None:
        # MLflow keeps a step per metric key: each series is on its own x-axis already
        for key, points in series.items():
            self._add_metrics([(key, v, s) for s, v in points])

    def log_image(self, key: str, path: Path) -> None:
        # the PNG was rendered once by the runner: upload that file as sanity/<check>/<name>.png
        self._upload(path, str(Path(key).parent), f"{Path(key).name}{path.suffix}")

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
        self._client.log_table(self.run_id, data=data, artifact_file=f"{key}.json")

    def log_html(self, key: str, path: Path) -> None:
        # MLflow's artifact view renders .html files in the browser
        self._upload(path, str(Path(key).parent), f"{Path(key).name}.html")

    def log_file(self, path: Path, folder: str = "") -> None:
        self._client.log_artifact(self.run_id, str(path), folder or None)

    def _upload(self, path: Path, folder: str, name: str) -> None:
        """Upload ``path`` as ``folder/name`` (log_artifact keeps the file's own name)."""
        if path.name == name:
            self._client.log_artifact(self.run_id, str(path), folder)
            return
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            staged = Path(d) / name
            shutil.copyfile(path, staged)
            self._client.log_artifact(self.run_id, str(staged), folder)

    def set_verdict(self, report: Report) -> None:
        from mlflow.entities import RunTag

        self._flush_metrics()
        tags = [RunTag("trackcheck.status", report.status)]
        tags += [RunTag(f"trackcheck.check.{c.name}", c.status.value) for c in report.checks]
        tags.append(RunTag("trackcheck.failed_checks", ",".join(report.gated_on)))
        if not self.attached:  # the caller's description is theirs
            tags.append(RunTag("mlflow.note.content", markdown_summary(report)))
        for i in range(0, len(tags), TAGS_PER_BATCH):
            self._client.log_batch(self.run_id, tags=tags[i : i + TAGS_PER_BATCH])

    def info(self) -> dict[str, Any]:
        uri = self.tracking_uri
        if uri.startswith(("http://", "https://")):
            view = f"{uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        else:
            view = f"mlflow ui --backend-store-uri {uri}"
        return {
            "backend": "mlflow",
            "tracking_uri": uri,
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "attached": self.attached,
            "view": view,
        }


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"
