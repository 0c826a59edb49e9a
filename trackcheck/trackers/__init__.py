"""Trackers: ``none``, ``mlflow`` and ``wandb``, each a thin wrapper over its SDK.

The SDKs are imported only when a backend starts, so ``tracker=none`` never loads them.
"""

from __future__ import annotations

import sys
from typing import Any

from trackcheck.trackers.base import NoTracker, Tracker, TrackerError, log_report

__all__ = [
    "NoTracker",
    "Tracker",
    "TrackerError",
    "active_run_tracker",
    "log_report",
    "make_tracker",
]


def active_run_tracker() -> Tracker:
    """A tracker for the run the caller's code already has open (W&B first, then MLflow).

    Looks only at SDKs the caller has imported, so it never starts one; NoTracker when no
    run is active.
    """
    wandb: Any = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        from trackcheck.trackers.wandb import WandbTracker

        return WandbTracker()
    mlflow: Any = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        from trackcheck.trackers.mlflow import MLflowTracker

        return MLflowTracker()
    return NoTracker()


def make_tracker(spec: Tracker | str | None) -> Tracker:
    """``None``/``"none"``, ``"mlflow"``, ``"wandb"`` (default settings), ``"auto"`` (the
    caller's active W&B or MLflow run, else none), or a tracker object (returned as is)."""
    if spec is None or spec == "none":
        return NoTracker()
    if spec == "auto":
        return active_run_tracker()
    if spec == "mlflow":
        from trackcheck.trackers.mlflow import MLflowTracker

        return MLflowTracker()
    if spec == "wandb":
        from trackcheck.trackers.wandb import WandbTracker

        return WandbTracker()
    if isinstance(spec, str):
        raise ValueError(f"tracker={spec!r}: expected none, mlflow, wandb, auto or a Tracker")
    return spec
