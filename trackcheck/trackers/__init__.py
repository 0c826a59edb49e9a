"""Trackers: ``none`` and ``mlflow`` (and ``wandb``), each a thin wrapper over its SDK."""

from trackcheck.trackers.base import NoTracker, Tracker, log_report

__all__ = ["NoTracker", "Tracker", "log_report"]
