"""MLflow backend: one run per stage (or the caller's active run), written in batches.

Everything goes through ``MlflowClient`` (never the fluent ``mlflow.start_run``), so the
stage neither needs nor leaves a process-wide active run: jobs of a Hydra multirun that
share a process cannot leak runs into each other.

Where things land (the same keys as in W&B, see ``trackers.base``):
- params: the resolved, redacted config, flattened (``optim.lr``), but for the checks'
  parameters at their defaults (``at_default``); ``sanity.`` prefixed when
  logging into the caller's run, so they cannot clash with the caller's own params;
- metrics (the Model metrics tab's charts, a section per check): the series with their
  own steps, and nothing else: MLflow charts each metric, and a one-point chart per check
  (and one for the verdict) buried the curves; the verdict is a tag, each check's value is
  in ``sanity/summary.json``. A check's compared series (real vs blanked inputs) are drawn
  together in its figure, since MLflow keeps one chart per metric;
- artifacts: ``sanity/<check>/<figure>.png``, ``sanity/summary.json`` (a table),
  ``sanity/metrics.json`` (a table of every other number), ``sanity/report.html``,
  ``sanity/report.json``;
- tags: ``trackcheck.status`` (passed|failed: a run-list column, on sweep parents too),
  ``trackcheck.failed_checks``, and for each check that failed, errored or warned
  ``trackcheck.check.<check>`` and ``trackcheck.message.<check>``; the run's description
  (``mlflow.note.content``): the verdict, a reason per failed check, a link to report.html
  (``markdown_summary``);
- the experiment: tagged a machine-learning one (``mlflow.experimentKind``), and the run's
  link opens MLflow 3's classic view (``?workflowType=machine_learning``);
- status: FINISHED, FAILED when the gate fails, KILLED on an interrupt.

Failing fast and saying it once: the store is checked before the run opens and every call
runs with bounded retries (``trackers._mlflow_store``). The first failed call becomes one
TrackerError line, and no call is made after it. Passwords in the URI never reach a
message, report.json or a stored file.

Lending the run to the user's training is ``MLflowTracker.activate``. Beside this module:
the store's checks and bounded HTTP (``trackers._mlflow_store``), and a sweep's parent run
(``open_parent_run``/``close_parent_run``), its jobs' arguments (``sweep_job_args``) and the
verdicts read back by the gate command (``read_verdicts``) in ``trackers._mlflow_sweep``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from trackcheck import gist, names
from trackcheck.core import Report, Status
from trackcheck.names import DEFAULT_MLFLOW_URI, RunStatus
from trackcheck.redact import first_line, flatten, redact
from trackcheck.trackers._mlflow_store import (
    absolute_uri,
    bounded_http,
    check_sqlite_store,
    ensure_experiment,
    escape_markdown,
    import_mlflow,
    probe_server,
    safe_uri,
    user_name,
)
from trackcheck.trackers.base import EXPLAINED, FileKind, TrackerError

PARAM_MAX = 6000  # MLflow rejects longer param values
TAG_MAX = 5000  # a message cut to this many characters (MLflow takes at most 8000)
# rows per log_batch call: MLflow's documented limits are 1000 metrics, 100 params, 100 tags
METRICS_PER_BATCH, PARAMS_PER_BATCH, TAGS_PER_BATCH = 1000, 100, 100
T = TypeVar("T")
REPORT_FILE = f"{names.REPORT_KEY}.html"  # report.html among a run's artifacts


def run_page(experiment_id: str | None, run_id: str | None, tail: str = "") -> str:
    """A run's page in MLflow's UI, relative to the UI's root (``#/experiments/...``),
    in the classic view; ``tail``: ``/artifactPath/<file>`` opens that artifact."""
    return f"#/experiments/{experiment_id}/runs/{run_id}{tail}?{names.MLFLOW_ML_VIEW}"


def markdown_summary(report: Report, link: str = "") -> str:
    """The run's description (Markdown), short enough to read without "Show more" (MLflow
    shows about three lines): the verdict, the counts and the link to report.html
    (``link``, a run page's ``artifactPath``, where every message is whole); with several
    failures, their names on one line (MLflow shows about three lines before "Show more",
    and a reason may take two); then one line per failed (or errored) check, its reason
    (``trackcheck.gist``); the warnings' names."""
    fails = [c for c in gist.findings(report) if c.status != Status.WARN]
    warns = [c for c in gist.findings(report) if c.status == Status.WARN]
    page = f"[report.html]({link})" if link else f"`{names.REPORT_KEY}.html`"
    lines = [f"**trackcheck: {report.status.upper()}** ({gist.tally(report)}), details: {page}"]
    lines += [""] if fails or warns else []
    if len(fails) > 1:  # the names, before MLflow's "Show more" cuts the reasons off
        named = ", ".join(c.name for c in fails) + (f"; warn: {len(warns)}" if warns else "")
        lines += [f"Failed: {escape_markdown(named)}", ""]
    lines += [
        f"- **{c.status.value}** {escape_markdown(c.name)}: "
        + escape_markdown(gist.reason_of(c, report))
        for c in fails
    ]
    if warns:
        lines.append(f"- **warn** {escape_markdown(', '.join(c.name for c in warns))}")
    return "\n".join(lines)


def at_default(key: str, value: Any) -> bool:
    """Whether ``key`` is a check's parameter (``checks.<check>.<param>``, a threshold or a
    budget) at its documented default: left out of the params, where ~140 of them buried
    the few a user sets and filters on (report.json keeps them all)."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "checks":
        return False
    from dataclasses import MISSING, fields

    from trackcheck.registry import all_checks

    spec = all_checks().get(parts[1])
    field = {f.name: f for f in fields(spec.params)}.get(parts[2]) if spec else None
    if field is None:
        return False
    default = field.default if field.default_factory is MISSING else field.default_factory()
    return default is not MISSING and str(default) == str(value)


class MLflowTracker:
    """Log the sanity stage to MLflow (``tracker=mlflow``).

    ``tracking_uri``: ``sqlite:///mlflow.db`` (default), ``http://host:5000`` or any MLflow
    URI. ``experiment_id`` (set by a sweep that created the experiment up front) wins over
    ``experiment_name``. With ``attach`` and an active fluent run in this process (trackcheck
    called from the user's training script), the stage logs into that run and leaves it open.

    Example (a stage logged to ./mlflow.db, its verdict read back with MLflow's client)::

        import trackcheck
        from mlflow import MlflowClient
        from trackcheck.data import digits
        from trackcheck.models import ResNet
        from trackcheck.trackers.mlflow import MLflowTracker

        tracker = MLflowTracker("sqlite:///mlflow.db", run_name="sanity-resnet")
        report = trackcheck.run(
            lambda: ResNet([1, 8, 8], 10), digits(), checks=["loss_at_init"], tracker=tracker
        )
        run = MlflowClient("sqlite:///mlflow.db").get_run(tracker.run_id)
        print(run.info.status, run.data.tags["trackcheck.status"])  # FINISHED passed
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = names.DEFAULT_EXPERIMENT,
        experiment_id: str | None = None,
        run_name: str | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
        attach: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri or DEFAULT_MLFLOW_URI
        self.experiment_name = experiment_name
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.parent_run_id = parent_run_id
        # tags are stored as given: one named like a credential is redacted like the config
        self.tags = {str(k): str(v) for k, v in redact(dict(tags or {})).items()}
        self.attach = attach
        self.attached = False
        self.run_id: str | None = None
        self._client: Any = None
        self._metrics: list[Any] = []  # mlflow.entities.Metric rows, written in set_verdict
        self._broken = ""  # why the last call to MLflow failed: no call is made after it

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One call to MLflow, with bounded HTTP retries; its failure as one TrackerError
        line, after which the tracker makes no more calls (each would retry again)."""
        if self._broken:
            raise TrackerError(self._broken)
        with bounded_http():
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - whatever the store or server raised
                self._broken = (
                    f"MLflow ({safe_uri(self.tracking_uri)}) failed while {what}: "
                    f"{type(e).__name__}: {first_line(e)}"
                )
                raise TrackerError(self._broken) from e

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, config: dict[str, Any], run_name: str) -> None:
        mlflow = import_mlflow()
        active = mlflow.active_run() if self.attach else None
        if active is not None:
            # trackcheck called from the user's training script: their run, their URI
            self.tracking_uri = mlflow.get_tracking_uri()
            self._client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
            self.run_id, self.attached = active.info.run_id, True
            self.experiment_id = active.info.experiment_id
        else:
            # an absolute sqlite path: MLflow caches a store per URI string, so a relative
            # one would keep writing to the file of the first working dir it was used in
            self.tracking_uri = absolute_uri(self.tracking_uri)
            probe_server(self.tracking_uri)
            check_sqlite_store(self.tracking_uri)
            self._client = self._call(
                "opening the store", mlflow.MlflowClient, tracking_uri=self.tracking_uri
            )
            self.experiment_id = self.experiment_id or self._call(
                "finding the experiment", ensure_experiment, self._client, self.experiment_name
            )
            tags = {names.MLFLOW_USER: user_name(), **self.tags}
            if self.parent_run_id:
                tags[names.MLFLOW_PARENT_RUN] = self.parent_run_id
            run = self._call(
                "creating the run",
                self._client.create_run,
                self.experiment_id,
                tags=tags,
                run_name=self.run_name or run_name,
            )
            self.run_id = run.info.run_id
        self._log_params(config)

    def _log_params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # never clash with the caller's params
        prefix = names.ATTACHED_PARAM_PREFIX if self.attached else ""
        flat = {k: v for k, v in flatten(config).items() if k and not at_default(k, v)}
        params = [Param(f"{prefix}{k}", str(v)[:PARAM_MAX]) for k, v in flat.items()]
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self._call(
                "logging the config",
                self._client.log_batch,
                self.run_id,
                params=params[i : i + PARAMS_PER_BATCH],
            )

    def finish(self, status: RunStatus) -> None:
        """Write what is buffered and end the run. After a failed call the buffer is dropped
        and closing is tried once more (TrackerError when that fails too: the run stays
        RUNNING in the store, and the message says why)."""
        if self._client is None or self.run_id is None:
            return
        broken = self._broken
        try:
            if not broken:
                self._flush_metrics()
        finally:  # metrics that cannot be written still let the run end
            if self.attached:  # the caller's run stays open: they end it
                print(
                    f"mlflow: sanity stage {status.lower()}, logged into the active run "
                    f"{self.run_id}",
                    file=sys.stderr,
                )
            else:
                self._terminate(status, broken)

    def _terminate(self, status: RunStatus, broken: str) -> None:
        self._broken = ""
        try:
            self._call("closing the run", self._client.set_terminated, self.run_id, status)
        except TrackerError as e:
            raise TrackerError(f"run {self.run_id} left RUNNING: {broken or e}") from e
        print(
            f"mlflow: run {self.run_id} {status}, report.html in its artifacts "
            f"({REPORT_FILE})\n  view: {self.info()['view']}",
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
            batch = rows[i : i + METRICS_PER_BATCH]
            self._call("logging metrics", self._client.log_batch, self.run_id, metrics=batch)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Not metrics: MLflow draws a chart for every metric, and a value logged once is a
        one-point chart (an empty axis with "0.00" for the verdict). The verdict is the
        ``trackcheck.status`` tag (a run-list column), each check's value the value column
        of ``sanity/summary.json``, both written elsewhere."""

    def log_series(self, series: dict[str, list[tuple[int, float]]], step_key: str) -> None:
        # MLflow keeps a step per metric key: each series is on its own x-axis already
        for key, points in series.items():
            self._add_metrics([(key, v, s) for s, v in points])

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
        self._call(
            f"logging the table {key}",
            self._client.log_table,
            self.run_id,
            data=data,
            artifact_file=f"{key}.json",
        )

    def log_file(self, key: str, path: Path, kind: FileKind = "file") -> None:
        # every kind is an artifact, ``<key><suffix>``: the artifact view shows a PNG as a
        # picture and renders an .html page; the PNG was rendered once by the runner
        self._upload(path, str(Path(key).parent), f"{Path(key).name}{path.suffix}")

    def _upload(self, path: Path, folder: str, name: str) -> None:
        """Upload ``path`` as ``folder/name`` (log_artifact keeps the file's own name)."""
        what = f"uploading {folder}/{name}"
        if path.name == name:
            self._call(what, self._client.log_artifact, self.run_id, str(path), folder)
            return
        import shutil

        with tempfile.TemporaryDirectory() as d:
            staged = Path(d) / name
            shutil.copyfile(path, staged)
            self._call(what, self._client.log_artifact, self.run_id, str(staged), folder)

    def set_verdict(self, report: Report) -> None:
        from mlflow.entities import RunTag

        self._flush_metrics()
        tags = [RunTag(names.TAG_STATUS, report.status)]
        tags.append(RunTag(names.TAG_FAILED_CHECKS, ",".join(report.gated_on)))
        # only the findings get tags (a check with none passed or was skipped), so the few
        # chips a run shows are what went wrong; the message is why, for the gate
        found = [c for c in report.checks if c.status.value in EXPLAINED]
        tags += [RunTag(names.check_tag(c.name), c.status.value) for c in found]
        tags += [RunTag(names.message_tag(c.name), c.message[:TAG_MAX]) for c in found]
        if not self.attached:  # the caller's description is theirs
            link = run_page(self.experiment_id, self.run_id, f"/artifactPath/{REPORT_FILE}")
            tags.append(RunTag(names.MLFLOW_NOTE, markdown_summary(report, link)))
        for i in range(0, len(tags), TAGS_PER_BATCH):
            batch = tags[i : i + TAGS_PER_BATCH]
            self._call("writing the verdict", self._client.log_batch, self.run_id, tags=batch)

    @contextmanager
    def activate(self) -> Iterator[None]:
        """Resume this run as MLflow's fluent active run (the user's training logs into it
        with ``mlflow.log_metric``); the caller's previous tracking URI comes back after.

        An attached run is the caller's active run already, and a run never started has
        nothing to lend: both leave MLflow as it is.
        """
        if self.attached or not self.run_id:
            yield
            return
        mlflow = import_mlflow()
        from mlflow.tracking._tracking_service import utils

        # the raw setting, None when unset: restoring get_tracking_uri()'s answer instead
        # would pin this URI and hide a later MLFLOW_TRACKING_URI from the caller's runs
        previous = getattr(utils, "_tracking_uri", None)
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with mlflow.start_run(run_id=self.run_id):
                yield
        finally:
            utils._tracking_uri = previous

    @staticmethod
    def has_active_run() -> bool:
        """Whether the caller's code has an MLflow run open (never imports MLflow itself)."""
        mlflow: Any = sys.modules.get("mlflow")
        return mlflow is not None and mlflow.active_run() is not None

    def info(self) -> dict[str, Any]:
        uri = safe_uri(self.tracking_uri)  # report.json and messages never hold a password
        # the classic runs view: MLflow 3's UI opens in its GenAI view unless told otherwise
        page = run_page(self.experiment_id, self.run_id)
        if uri.startswith(("http://", "https://")):
            view = f"{uri.rstrip('/')}/{page}"
        else:
            view = f"mlflow ui --backend-store-uri {uri}, then open http://127.0.0.1:5000/{page}"
        return {
            "backend": names.BACKEND_MLFLOW,
            "tracking_uri": uri,
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "attached": self.attached,
            "view": view,
        }
