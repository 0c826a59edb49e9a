"""Trackers: ``none``, ``mlflow`` and ``wandb``, each a thin wrapper over its SDK.

This is where the tracker choice is made, once: which backend a name (``tracker="mlflow"``)
or a config node (``_target_: trackcheck.trackers.mlflow.MLflowTracker``) means, and which
backend owns the caller's active run (``tracker="auto"``). The sweep and the runner ask
here; each backend module owns everything else it does with its SDK.

The SDKs are imported only when a backend starts, so ``tracker=none`` never loads them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from trackcheck.core import ConfigError
from trackcheck.names import BACKEND_MLFLOW, BACKEND_NONE, BACKEND_WANDB
from trackcheck.trackers.base import NoTracker, Tracker, TrackerError, log_report, log_results

__all__ = [
    "BACKENDS",
    "LOCAL_STORE_DIRS",
    "NoTracker",
    "Tracker",
    "TrackerError",
    "active_run_tracker",
    "backend_of",
    "log_report",
    "log_results",
    "make_tracker",
    "tracker_class",
]

# backend name -> its class (the ``_target_`` of conf/tracker/<name>.yaml)
BACKENDS: dict[str, str] = {
    BACKEND_NONE: "trackcheck.trackers.base.NoTracker",
    BACKEND_MLFLOW: "trackcheck.trackers.mlflow.MLflowTracker",
    BACKEND_WANDB: "trackcheck.trackers.wandb.WandbTracker",
}
# the folders the SDKs write their local stores to (MLflow's artifacts, W&B's runs): copies
# of report.json in there are not stages of their own
LOCAL_STORE_DIRS = frozenset({"mlruns", "wandb"})


def backend_of(spec: Any) -> str | None:
    """The backend ``spec`` names: a backend name, or a config node whose ``_target_`` ends
    with a backend's class name (``...mlflow.MLflowTracker``); None for anything else."""
    if isinstance(spec, str):
        return spec if spec in BACKENDS else None
    if not isinstance(spec, Mapping):  # a DictConfig is a Mapping too
        return None
    target = str(spec.get("_target_", ""))
    for name, path in BACKENDS.items():
        if target.endswith("." + path.rsplit(".", 1)[1]):
            return name
    return None


def tracker_class(backend: str) -> Any:
    """The class of a backend (its module imported, its SDK not)."""
    module, cls = BACKENDS[backend].rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)


def active_run_tracker() -> Tracker:
    """A tracker for the run the caller's code already has open (W&B first, then MLflow).

    Looks only at SDKs the caller has imported, so it never starts one; NoTracker when no
    run is active.
    """
    for backend in (BACKEND_WANDB, BACKEND_MLFLOW):
        cls = tracker_class(backend)
        if cls.has_active_run():
            return cls()
    return NoTracker()


# what the runner calls on a tracker object (trackers.base.Tracker)
TRACKER_METHODS = (
    "start",
    "log_metrics",
    "log_series",
    "log_table",
    "log_file",
    "set_verdict",
    "finish",
    "info",
    "activate",
)


def make_tracker(spec: Tracker | str | None) -> Tracker:
    """``None``/``"none"``, ``"mlflow"``, ``"wandb"`` (default settings), ``"auto"`` (the
    caller's active W&B or MLflow run, else none), or a tracker object (returned as is).
    ConfigError for another name or an object that lacks a Tracker method."""
    if spec is None:
        return NoTracker()
    if spec == "auto":
        return active_run_tracker()
    if isinstance(spec, str):
        if spec not in BACKENDS:
            raise ConfigError(
                f"tracker={spec!r}: expected none, mlflow, wandb, auto or a Tracker object"
            )
        return tracker_class(spec)()  # type: ignore[no-any-return]
    # getattr, not isinstance(spec, Tracker): a wrapper that delegates by __getattr__ counts
    missing = [m for m in TRACKER_METHODS if not callable(getattr(spec, m, None))]
    if missing:
        raise ConfigError(
            f"tracker={type(spec).__name__}: not a Tracker, it has no {', '.join(missing)}; "
            "use none, mlflow, wandb, auto or a trackcheck.trackers object"
        )
    return spec
