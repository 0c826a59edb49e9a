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

Failing fast and saying it once: a sqlite store that cannot be opened or written is refused
before the run opens (MLflow itself would retry for about 100 s), an http(s) server is
probed with one GET of ``/health`` (basic auth from ``user:password@`` in the URI or
MLFLOW_TRACKING_USERNAME/PASSWORD), and every call to the server runs with bounded retries
and timeout (``HTTP_ENV``, unless the MLFLOW_HTTP_REQUEST_* variables are set). The first
failed call becomes one TrackerError line, and no call is made after it. Passwords in the
URI never reach a message, report.json or a stored file.

Everything else trackcheck does with MLflow lives here too, behind small functions: lending
the run to the user's training (``MLflowTracker.activate``), a sweep's parent run
(``open_parent_run``/``close_parent_run``) and its jobs' arguments (``sweep_job_args``), and
reading verdicts back for the gate (``read_verdicts``).
"""

from __future__ import annotations

import base64
import getpass
import logging
import os
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from trackcheck import names
from trackcheck.core import Report
from trackcheck.names import DEFAULT_MLFLOW_URI, RunStatus
from trackcheck.redact import first_line, flatten, redact, redact_text
from trackcheck.trackers.base import (
    BAD_CHECK,
    SUMMARY_COLUMNS,
    FileKind,
    RunVerdict,
    TrackerError,
    summary_rows,
)

PARAM_MAX = 6000  # MLflow rejects longer param values
# rows per log_batch call: MLflow's documented limits are 1000 metrics, 100 params, 100 tags
METRICS_PER_BATCH, PARAMS_PER_BATCH, TAGS_PER_BATCH = 1000, 100, 100
PROBE_TIMEOUT_S = 5.0  # a server that does not answer /health in 5 s is treated as down
# MLflow's own defaults retry a dead server 7 times with backoff factor 2 and wait 120 s per
# request: 8.5 minutes of silence. Ours, set only while trackcheck talks to the server and
# only where the user has not set them: 2 retries (sleeps of about 1 s and 2 s, plus
# jitter) and 20 s per request, so a dead server costs seconds and a slow one under a minute
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # MLflow prints "View run ... at: <URI>" on its own, password and all; our line says
    # where the run is, without it
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
SQLITE_LOCK_TIMEOUT_S = 10.0  # parallel sweep jobs hold the write lock for milliseconds each
T = TypeVar("T")


def safe_uri(uri: str) -> str:
    """The URI as it may be shown or stored: ``http://user:***REDACTED***@host``."""
    return redact_text(uri)


@contextmanager
def bounded_http() -> Iterator[None]:
    """``HTTP_ENV`` in the environment (MLflow reads it per request) while trackcheck
    talks to the server, and urllib3's per-retry warnings held back: one line says it."""
    added = {k: v for k, v in HTTP_ENV.items() if k not in os.environ}
    os.environ.update(added)
    pool = logging.getLogger("urllib3.connectionpool")
    level = pool.level
    pool.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pool.setLevel(level)
        for k in added:
            os.environ.pop(k, None)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError as e:
        raise TrackerError(
            "tracker=mlflow needs MLflow: pip install mlflow (or use tracker=none)"
        ) from e
    return mlflow


def _health_request(uri: str) -> urllib.request.Request:
    """GET <server>/health, with basic auth from ``user:password@`` in the URI (urllib would
    take ``user:password@host`` for a host name) or MLFLOW_TRACKING_USERNAME/PASSWORD."""
    parts = urlsplit(uri)
    user, password = parts.username, parts.password
    if user is None:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    host = parts.netloc.rsplit("@", 1)[-1]  # keeps [ipv6] brackets and the port
    url = urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
    request = urllib.request.Request(url)
    if user is not None:
        pair = f"{unquote(user)}:{unquote(password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    return request


def probe_server(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail in seconds, not minutes, on an http(s) tracking URI that nobody answers.

    MLflow's client retries a dead server for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES with
    exponential backoff); one GET of the server's ``/health`` tells us first.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(_health_request(uri), timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 behind a proxy that wants auth): MLflow will say more
    except (OSError, ValueError) as e:
        raise TrackerError(
            f"cannot reach the MLflow server at {safe_uri(uri)} ({first_line(e)}). Start it "
            "with `mlflow server --host 127.0.0.1 --port 5000`, fix tracker.tracking_uri, or "
            f"log to the local store with tracker.tracking_uri={DEFAULT_MLFLOW_URI}"
        ) from e


def _sqlite_target(uri: str) -> tuple[str, bool] | None:
    """(what sqlite3.connect takes, whether it is a ``file:`` URI), or None for a store
    that is not an sqlite file (a server, memory)."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if not url.database or url.database == ":memory:":
        return None
    if url.query.get("uri") in ("true", "True", "1") or url.database.startswith("file:"):
        query = {k: v for k, v in url.query.items() if k != "uri"}
        return url.database + (f"?{urlencode(query, doseq=True)}" if query else ""), True
    return url.database, False


def check_sqlite_store(uri: str, timeout: float = SQLITE_LOCK_TIMEOUT_S) -> None:
    """TrackerError in seconds for an sqlite store MLflow cannot write: a folder, a file that
    is no database, a read-only file or folder (MLflow retries opening it for about 100 s,
    then prints 150 lines). One write inside a transaction that is rolled back proves it;
    a store locked by parallel writers is waited for ``timeout`` s, then left to MLflow."""
    target = _sqlite_target(uri)
    if target is None:
        return
    db, is_uri = target
    fix = f"fix tracker.tracking_uri (now {safe_uri(uri)}) or the file's permissions"
    if not is_uri and not Path(db).exists():
        folder = Path(db).parent
        try:  # a new store: its folder must take a file
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as e:
            why = e.strerror or e
            raise TrackerError(f"cannot create the MLflow store {db}: {why}; {fix}") from e
        return
    try:
        conn = sqlite3.connect(db, timeout=timeout, uri=is_uri, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE trackcheck_write_probe (x)")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as e:
        if "locked" in str(e) or "busy" in str(e):
            return  # in use by other writers: MLflow waits its turn
        raise TrackerError(f"the MLflow store {db} cannot be written ({e}); {fix}") from e


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
        mlflow = _mlflow()
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
            tags = {names.MLFLOW_USER: _user(), **self.tags}
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
        flat = flatten(config)
        params = [Param(f"{prefix}{k}", str(v)[:PARAM_MAX]) for k, v in flat.items() if k]
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
            f"mlflow: run {self.run_id} ({status}) in {safe_uri(self.tracking_uri)}; "
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
            batch = rows[i : i + METRICS_PER_BATCH]
            self._call("logging metrics", self._client.log_batch, self.run_id, metrics=batch)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self._add_metrics([(k, v, 0) for k, v in metrics.items()])

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
        tags += [RunTag(names.check_tag(c.name), c.status.value) for c in report.checks]
        tags.append(RunTag(names.TAG_FAILED_CHECKS, ",".join(report.gated_on)))
        if not self.attached:  # the caller's description is theirs
            tags.append(RunTag(names.MLFLOW_NOTE, markdown_summary(report)))
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
        mlflow = _mlflow()
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
        if uri.startswith(("http://", "https://")):
            view = f"{uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        else:
            view = f"mlflow ui --backend-store-uri {uri}"
        return {
            "backend": names.BACKEND_MLFLOW,
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


def ensure_experiment(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when it does not exist yet."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # created by a parallel job between our two calls
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


# --- sweeps: one parent run, a child per job -----------------------------------------------
def absolute_uri(uri: str) -> str:
    """``sqlite:///mlflow.db`` -> ``sqlite:////abs/cwd/mlflow.db``: jobs that change their
    working dir (``hydra.job.chdir=true``) or run on another node still find the same file."""
    prefix = "sqlite:///"
    path = uri[len(prefix) :]
    if uri.startswith(prefix) and not path.startswith(("/", "file:")) and "?" not in path:
        return prefix + os.path.abspath(path)
    return uri  # absolute already, a server, or an sqlite file: URI (resolved by sqlite)


def configured_uri(node: Mapping[str, Any]) -> str:
    """The store a tracker config node logs to, as the config spells it."""
    return str(node.get("tracking_uri") or DEFAULT_MLFLOW_URI)


# safe_uri -> the URI with its password, for the parent run this process opened: sweep.json
# and multirun_report.json store only the safe form
_WITH_PASSWORD: dict[str, str] = {}


def _real_uri(stored: str) -> str:
    return _WITH_PASSWORD.get(stored, stored)


def open_parent_run(node: Mapping[str, Any], sweep_id: str, sweep_dir: str) -> dict[str, str]:
    """Create the store, the experiment and the sweep's parent run: once, before any job.

    Returns what the jobs need (``sweep_job_args``) and ``close_parent_run`` reads:
    configured_uri (as the config spells it), tracking_uri (absolute), experiment_id and
    parent_run_id; the URIs without their password (the sweep writes them to files).
    """
    configured = configured_uri(node)
    uri = absolute_uri(configured)
    _WITH_PASSWORD[safe_uri(uri)] = uri
    probe_server(uri)
    check_sqlite_store(uri)
    with bounded_http():
        client = _mlflow().MlflowClient(tracking_uri=uri)  # first use creates the schema
        exp_id = node.get("experiment_id") or ensure_experiment(
            client, str(node.get("experiment_name") or names.DEFAULT_EXPERIMENT)
        )
        tags = {
            names.MLFLOW_RUN_NAME: names.sweep_run_name(sweep_id),
            names.TAG_ROLE: names.ROLE_SWEEP,
            names.TAG_SWEEP_ID: sweep_id,
            names.TAG_SWEEP_DIR: sweep_dir,
        }
        run = client.create_run(str(exp_id), tags=tags)
    return {
        "configured_uri": safe_uri(configured),
        "tracking_uri": safe_uri(uri),
        "experiment_id": str(exp_id),
        "parent_run_id": run.info.run_id,
    }


def sweep_job_args(
    node: Mapping[str, Any], sweep_id: str, parent: Mapping[str, str]
) -> dict[str, Any]:
    """A job's MLflowTracker arguments from its sweep's ``open_parent_run``: the parent run,
    experiment id and absolute store, only when the job logs to the store the parent is in
    (a store with a password: the job's own URI, which holds it)."""
    configured = configured_uri(node)
    if safe_uri(configured) != parent["configured_uri"]:
        return {}
    has_password = safe_uri(configured) != configured
    return {
        "tracking_uri": absolute_uri(configured) if has_password else parent["tracking_uri"],
        "experiment_id": node.get("experiment_id") or parent["experiment_id"],
        "parent_run_id": parent["parent_run_id"],
        "tags": {**(node.get("tags") or {}), names.TAG_SWEEP_ID: sweep_id},
    }


def close_parent_run(
    parent: Mapping[str, str],
    passed: bool,
    counts: Mapping[str, int],
    failed_jobs: Sequence[int],
    report: Path,
) -> None:
    """The sweep's verdict on its parent run: job counts by status, the failed jobs, the
    summary file; then the run ends FINISHED (the sweep passed) or FAILED."""
    client = _mlflow().MlflowClient(tracking_uri=_real_uri(parent["tracking_uri"]))
    run_id = parent["parent_run_id"]
    with bounded_http():
        for status, n in counts.items():
            client.log_metric(run_id, names.sweep_jobs_key(status), n)
        client.set_tag(run_id, names.TAG_SWEEP_STATUS, names.PASSED if passed else names.FAILED)
        client.set_tag(run_id, names.TAG_FAILED_JOBS, ",".join(str(j) for j in failed_jobs))
        client.log_artifact(run_id, str(report), names.PREFIX)
        client.set_terminated(run_id, names.RUN_FINISHED if passed else names.RUN_FAILED)


# --- the gate: verdicts read back ----------------------------------------------------------
def _search(client: Any, exp_ids: list[str], filters: Sequence[str]) -> list[Any]:
    """All runs matching every filter (MLflow pages its answers)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            exp_ids, " and ".join(f for f in filters if f), max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _verdict(run: Any) -> RunVerdict:
    """One run's verdict from the tags ``set_verdict`` wrote."""
    tags = run.data.tags
    status = tags.get(names.TAG_STATUS)
    name = run.info.run_name or run.info.run_id
    if status is None:  # a child of the sweep that never got a verdict
        return RunVerdict(
            run=name,
            where=run.info.run_id,
            status=names.ERROR if run.info.status != "RUNNING" else names.RUNNING,
            detail=f"no {names.TAG_STATUS} tag; the run is {run.info.status}",
        )
    failed = [c for c in tags.get(names.TAG_FAILED_CHECKS, "").split(",") if c]
    if not failed:  # older runs, or a gate that failed on warnings: read the per-check tags
        failed = [
            k[len(names.TAG_CHECK_PREFIX) :]
            for k, v in tags.items()
            if k.startswith(names.TAG_CHECK_PREFIX) and v in BAD_CHECK
        ]
    return RunVerdict(
        run=name,
        where=run.info.run_id,
        status=names.PASSED if status == names.PASSED else names.FAILED,
        failed_checks=sorted(failed),
    )


def _experiment_ids(client: Any, tracking_uri: str, experiment: str | None) -> list[str]:
    exp = client.get_experiment_by_name(experiment or names.DEFAULT_EXPERIMENT)
    if exp is None and experiment and experiment.isdigit():
        exp = client.get_experiment(experiment)
    if exp is None:
        raise TrackerError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    return [exp.experiment_id]


def read_verdicts(
    tracking_uri: str,
    experiment: str | None = None,
    parent_run: str | None = None,
    extra_filter: str = "",
) -> list[RunVerdict]:
    """Runs with a trackcheck verdict in an experiment (by name or id), or a sweep's children.

    In an experiment: the runs whose ``tags.`trackcheck.status``` is passed or failed; the
    sweeps' parent runs carry no such tag. Under a parent run: every child, so one without
    the tag (a job that crashed or still runs) counts. TrackerError when there is no such
    experiment or run.
    """
    client = _mlflow().MlflowClient(tracking_uri=tracking_uri)
    if parent_run:
        try:
            exp_ids = [client.get_run(parent_run).info.experiment_id]
        except Exception as e:  # noqa: BLE001 - MLflow raises its own error types per store
            raise TrackerError(f"no MLflow run {parent_run} in {tracking_uri}: {e}") from e
        scope = f"tags.`{names.MLFLOW_PARENT_RUN}` = '{parent_run}'"
        runs = _search(client, exp_ids, [scope, extra_filter])
    else:
        exp_ids = _experiment_ids(client, tracking_uri, experiment)
        runs = [
            r
            for verdict in (names.PASSED, names.FAILED)
            for r in _search(
                client, exp_ids, [f"tags.`{names.TAG_STATUS}` = '{verdict}'", extra_filter]
            )
        ]
    ordered = sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_name or ""))
    return [_verdict(r) for r in ordered]
