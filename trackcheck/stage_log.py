"""The stage's log lines: what lands in the output dir's ``trackcheck.log`` under Hydra.

Through :mod:`logging` (logger ``trackcheck``), so Hydra's job logging writes them to the
job's log file; the terminal shows the progress display instead (trackcheck/conf/config.yaml
sends this logger to the file only). Without Hydra nothing is configured, so nothing shows
unless the caller sets up logging. Messages are logged only once redacted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trackcheck.core import CheckResult, Report, Status

log = logging.getLogger("trackcheck")


def check_started(name: str) -> None:
    log.info("%s: started", name)


def check_done(result: CheckResult) -> None:
    """The verdict and the time, as each check ends (its message comes with ``verdict``)."""
    log.info("%s: %s in %.2fs", result.name, result.status.value, result.duration_s)


def tracker_opened(info: Mapping[str, Any]) -> None:
    """The tracker's run (``Tracker.info()``, redacted): backend, run id, URL."""
    log.info("tracker: %s", ", ".join(f"{k}={v}" for k, v in info.items() if v))


def verdict(report: Report) -> None:
    """The gate's verdict and each check that did not pass, with its (redacted) message."""
    for r in report.checks:
        if r.status != Status.PASS:
            log.info("%s: %s: %s", r.name, r.status.value, r.message)
    gated = f" (gated on {', '.join(report.gated_on)})" if report.gated_on else ""
    passed = "passed" if report.passed else "failed"
    log.info("stage %s in %.2fs%s", passed, report.duration_s, gated)


def published(files: Sequence[Path]) -> None:
    log.info("report: %s", ", ".join(str(f) for f in files) or "none written")
