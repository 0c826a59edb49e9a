"""What a sweep's job needs from the machine it runs on, checked before its stage runs.

A sweep's jobs talk to it through files in the sweep dir (``trackcheck.sweep``) and log to
the store the sweep's parent run is in. Under submitit (SLURM) and Ray a job runs in another
process, often on another node, and often in another working dir (a Ray worker runs in the
dir ``ray start`` ran in, not the driver's). Three things then go wrong silently; each is a
one-line error here instead, naming the host, the dir and the fix:

1. the sweep dir is not visible (not on a shared file system, or relative to a working dir
   the job does not have): the job's verdict would be written where nobody reads it. Raised
   out of the job (``SweepDirNotVisible``), so the launcher hands it to the main process;
2. ``hydra.sweep.dir`` is relative and the job's working dir is not the sweep's: Hydra put
   the job's outputs (report.json) under the job's working dir, outside the sweep dir;
3. the job logs to another MLflow store than the sweep's parent run: its store on disk
   (sqlite, a file store) is not there as the job sees it, or its config resolved another
   ``tracker.tracking_uri`` (an environment variable the worker does not have): its run
   would land in another store (or a new empty one), outside the sweep.

2 and 3 fail the job (status ``error``, the message in the sweep summary); the other jobs run.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trackcheck.core import ConfigError
from trackcheck.trackers.base import TrackerError

SWEEP_CALLBACK = "trackcheck.sweep.SweepCallback"
SHARED_FIX = (
    "put hydra.sweep.dir on a file system every node mounts at the same path, as an "
    "absolute path, e.g. hydra.sweep.dir=/shared/$USER/multirun/my-sweep"
)
SERVER_FIX = (
    "a store on disk must be at the same absolute path on a file system every node shares "
    "(and sqlite on NFS can lose writes); on a cluster use an MLflow server: "
    "`mlflow server --host 0.0.0.0 --port 5000` and tracker.tracking_uri=http://HOST:5000"
)


class SweepDirNotVisible(RuntimeError):
    """The job cannot see its sweep's dir: nothing it records would reach the sweep."""


def here() -> str:
    """``host node7, working dir /home/ray``: where this job runs, for the messages."""
    return f"host {socket.gethostname()}, working dir {os.getcwd()}"


def _runs_sweep_callback(hc: Any) -> bool:
    callbacks = hc.get("callbacks") or {}
    return any(str((c or {}).get("_target_")) == SWEEP_CALLBACK for c in callbacks.values())


def require_sweep_dir(hc: Any, sweep_dir: Path) -> None:
    """Raise ``SweepDirNotVisible`` when the sweep's ``.trackcheck/sweep.json`` (written by
    the main process before any job starts) is not there as this job sees ``sweep_dir``."""
    from trackcheck.sweep import state_dir

    if not _runs_sweep_callback(hc) or (state_dir(sweep_dir) / "sweep.json").exists():
        return
    relative = "" if Path(str(hc.sweep.dir)).is_absolute() else " (relative to its working dir)"
    raise SweepDirNotVisible(
        f"job {hc.job.num} ({here()}) cannot see its sweep dir {sweep_dir}{relative}: "
        f"{state_dir(sweep_dir).name}/sweep.json, written before the jobs started, is not "
        f"there, so its verdict would reach no summary; {SHARED_FIX}"
    )


def check_output_dir(hc: Any, sweep_dir: Path) -> None:
    """ConfigError when Hydra put the job's outputs outside the sweep dir: a relative
    ``hydra.sweep.dir`` resolved in a working dir that is not the sweep's (Ray workers)."""
    out = Path(str(hc.runtime.output_dir)).resolve()
    if out.is_relative_to(sweep_dir.resolve()):
        return
    raise ConfigError(
        f"this job runs in {os.getcwd()} (host {socket.gethostname()}), not in "
        f"{hc.runtime.cwd} where the sweep started, and hydra.sweep.dir={hc.sweep.dir} is "
        f"relative: its report would go to {out}, outside the sweep dir {sweep_dir}; "
        f"give an absolute hydra.sweep.dir, e.g. hydra.sweep.dir={sweep_dir}"
    )


def _file_store(uri: str) -> Path | None:
    """The folder of an MLflow file store (``file:...`` or a plain path), else None."""
    scheme = urlsplit(uri).scheme
    if scheme == "file":
        from mlflow.utils.file_utils import local_file_uri_to_path

        return Path(local_file_uri_to_path(uri))
    return Path(uri) if scheme == "" else None


def check_store(args: Mapping[str, Any]) -> None:
    """TrackerError when the store the sweep's jobs log to (``args``: the job's tracker
    arguments from ``sweep.tracker_args``) is on disk and does not hold the sweep's parent
    run as this job sees it. A server is probed by the tracker itself."""
    from trackcheck.trackers._mlflow_store import _sqlite_target, safe_uri

    uri, parent = args.get("tracking_uri"), args.get("parent_run_id")
    if not uri or not parent:
        return  # not logging into the sweep's parent run
    uri = str(uri)
    sqlite = _sqlite_target(uri)
    folder = _file_store(uri) if sqlite is None else None
    if sqlite is not None and not sqlite[1] and not Path(sqlite[0]).exists():
        what = f"the sqlite file {sqlite[0]} does not exist"
    elif folder is not None and not (folder / str(args["experiment_id"]) / parent).is_dir():
        rel = "" if folder.is_absolute() else " (a relative path: resolved in this dir)"
        what = f"the file store {folder.absolute()}{rel} has no parent run {parent}"
    else:
        return
    raise TrackerError(
        f"the sweep's MLflow store {safe_uri(uri)} is not here ({here()}): {what}, so this "
        f"job's run would land in another store than its sweep's; {SERVER_FIX}"
    )


def check_tracker(node: Any, hc: Any, sweep_dir: Path, tracker_args: Mapping[str, Any]) -> None:
    """TrackerError when the sweep has an MLflow parent run but this job's config resolved
    another store (``tracker_args`` empty), and not because the job's overrides say so:
    ``${oc.env:MLFLOW_TRACKING_URI,...}`` is resolved where the job runs, and a Ray worker
    has the environment of ``ray start``, not the driver's."""
    from trackcheck.names import BACKEND_MLFLOW
    from trackcheck.sweep import read_context
    from trackcheck.trackers import backend_of
    from trackcheck.trackers._mlflow_store import configured_uri, safe_uri

    ctx = read_context(sweep_dir)
    if tracker_args or ctx is None or not ctx.mlflow or backend_of(node) != BACKEND_MLFLOW:
        return
    if any(o.lstrip("+").startswith("tracker.tracking_uri=") for o in hc.overrides.task):
        return  # the sweep sweeps the store itself
    raise TrackerError(
        f"this job ({here()}) logs to the MLflow store {safe_uri(configured_uri(node))}, but "
        f"its sweep's parent run is in {ctx.mlflow['configured_uri']}: its config resolved "
        "tracker.tracking_uri differently here. A ${oc.env:MLFLOW_TRACKING_URI,...} default "
        "reads the environment where the job runs (a Ray worker has the environment `ray "
        "start` had, not yours); give the store on the command line: "
        f"tracker.tracking_uri={ctx.mlflow['configured_uri']}"
    )


def check_job(cfg: Any, hc: Any, sweep_dir: Path, tracker_args: Mapping[str, Any]) -> None:
    """The checks 2 and 3 of the module docstring, for one job of a sweep."""
    check_output_dir(hc, sweep_dir)
    check_tracker(cfg.get("tracker"), hc, sweep_dir, tracker_args)
    check_store(tracker_args)
