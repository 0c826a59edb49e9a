"""SIGTERM as an interrupt, torch-free: the CLI installs this handler on its first line,
before torch or any check is imported."""

from __future__ import annotations

import signal
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, Kubernetes and CI send) raised as an interrupt, so the stage
    handles it like Ctrl-C."""

    signum = int(signal.SIGTERM)


def raise_terminated(signum: int, frame: Any) -> None:
    """A SIGTERM handler: the signal as ``Terminated``, handled like Ctrl-C."""
    raise Terminated(f"terminated by signal {signum}")
