"""Real trackers for the tests: a migrated MLflow sqlite store, a real `mlflow server` on a
free local port, W&B offline folders and `wandb leet inspect` read-backs. A pytest plugin
(tests/conftest.py loads it): its fixtures are shared by every test file that needs them.
No mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated sqlite store per session: creating MLflow's schema takes seconds."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    d = tmp_path_factory.mktemp("mlflow-template")
    store = SqlAlchemyStore(f"sqlite:///{d / 'mlflow.db'}", str(d / "mlruns"))
    store.engine.dispose()
    return d / "mlflow.db"


def fresh_store(template: Path, folder: Path) -> str:
    shutil.copyfile(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER_START_S = 60  # `mlflow server` imports MLflow twice (CLI + uvicorn worker): ~5-10 s


@pytest.fixture
def mlflow_server(mlflow_template: Path, tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on a free local port, serving artifacts; killed afterwards."""
    db = fresh_store(mlflow_template, tmp_path)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        db,
        "--artifacts-destination",
        str(tmp_path / "served"),
        "--workers",
        "1",
    ]
    log = (tmp_path / "server.log").open("w")
    # own process group: the CLI starts a uvicorn child, and both must go at the end
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_tail = (tmp_path / "server.log").read_text()[-2000:]
                    pytest.fail(f"mlflow server did not start: {log_tail}")
                time.sleep(0.2)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def wandb_cli() -> str:
    exe = Path(sys.executable).with_name("wandb")
    return str(exe) if exe.is_file() else (shutil.which("wandb") or "wandb")


def leet_summary(run_dir: str) -> dict[str, Any]:
    """State, exit code, tags, config and summary, as `wandb leet inspect --summary` sees them."""
    out = subprocess.run(
        [wandb_cli(), "leet", "inspect", run_dir, "--summary", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(json.loads(out.stdout))


def leet_records(run_dir: str) -> list[dict[str, Any]]:
    """Every record of the run's transaction log (history rows, metric definitions, ...)."""
    out = subprocess.run(
        [wandb_cli(), "leet", "inspect", run_dir, "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def wandb_env(mp: pytest.MonkeyPatch, root: Path) -> None:
    """All of W&B's folders under ``root``; no API key anywhere; offline."""
    for var, sub in [
        ("WANDB_DIR", ""),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
    ]:
        (root / sub).mkdir(parents=True, exist_ok=True)
        mp.setenv(var, str(root / sub))
    mp.setenv("WANDB_MODE", "offline")
    mp.delenv("WANDB_API_KEY", raising=False)
    mp.delenv("WANDB_BASE_URL", raising=False)
    mp.setenv("NETRC", str(root / "no-netrc"))


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """W&B's folders under tmp_path, offline, no key; the SDK torn down after the test."""
    import wandb

    wandb_env(monkeypatch, tmp_path / "wb")
    yield tmp_path / "wb"
    wandb.teardown()  # the SDK caches settings per process: the next test starts clean
