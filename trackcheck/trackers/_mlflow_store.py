"""Reaching an MLflow store: URIs, reachability probes, bounded retries, experiments.

Failing fast and saying it once: a sqlite store that cannot be opened or written is refused
before a run opens (MLflow itself would retry for about 100 s), an http(s) server is probed
with one GET of ``/health`` (basic auth from ``user:password@`` in the URI or
MLFLOW_TRACKING_USERNAME/PASSWORD), and every call to the server runs with bounded retries
and timeout (``HTTP_ENV``, unless the MLFLOW_HTTP_REQUEST_* variables are set). Passwords in
the URI never reach a message (``safe_uri``). Used by the tracker (``trackers.mlflow``) and
the sweep's parent run (``trackers._mlflow_sweep``).
"""

from __future__ import annotations

import base64
import getpass
import logging
import os
import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from trackcheck.names import DEFAULT_MLFLOW_URI, MLFLOW_EXPERIMENT_KIND
from trackcheck.names import EXPERIMENT_KIND_ML as ML_KIND
from trackcheck.redact import first_line, redact_text
from trackcheck.trackers.base import TrackerError

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


# Markdown's punctuation, backslash-escaped, and HTML's, as entities: a message such as
# "__getitem__ returned <lambda> [0.1, 0.2]" must show as written, not bold or as a tag
_MD_ESCAPE = str.maketrans(
    {**{c: "\\" + c for c in "\\`*_{}[]()#+-.!|~"}, "<": "&lt;", ">": "&gt;", "&": "&amp;"}
)


def escape_markdown(text: str) -> str:
    """``text`` as literal Markdown (a run's description): shown as written, on one line."""
    return " ".join(str(text).split()).translate(_MD_ESCAPE)


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


def import_mlflow() -> Any:
    try:
        import mlflow
    except ImportError as e:
        raise TrackerError(
            "tracker=mlflow needs MLflow: pip install mlflow (or use tracker=none)"
        ) from e
    quiet_store_setup()
    return mlflow


# MLflow's loggers whose INFO lines say how the store is being set up ("Creating initial
# MLflow database tables...", "Updating database tables" on a new sqlite file): noise
# between the checks' lines, not something a user acts on
STORE_SETUP_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration")


def quiet_store_setup() -> None:
    """Hold MLflow's store set-up INFO lines back (WARNING and above still show), unless the
    user's logging config set those loggers' levels itself."""
    for name in STORE_SETUP_LOGGERS:
        log = logging.getLogger(name)
        if log.level == logging.NOTSET:
            log.setLevel(logging.WARNING)


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


def ensure_experiment(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when it does not exist yet, and marked a
    machine-learning experiment (``mlflow.experimentKind``) when it has no kind: MLflow 3
    then opens it on its classic runs view, not the GenAI one."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return str(client.create_experiment(name, tags={MLFLOW_EXPERIMENT_KIND: ML_KIND}))
        except Exception:  # created by a parallel job between our two calls
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if MLFLOW_EXPERIMENT_KIND not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, MLFLOW_EXPERIMENT_KIND, ML_KIND)
    return str(exp.experiment_id)


def user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"
