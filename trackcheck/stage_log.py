"""The stage's log lines: what lands in the output dir's ``trackcheck.log`` under Hydra.

Through :mod:`logging` (logger ``trackcheck``), so Hydra's job logging writes them to the
job's log file; the terminal shows the progress display instead (trackcheck/conf/config.yaml
sends this logger to the file only). Without Hydra nothing is configured, so nothing shows
unless the caller sets up logging. In an app with its own logging (a Hydra app's
``job_logging``, with the trackcheck callback), the lines go to its log files but not to its
console while the progress display shows them there (:func:`beside_console`). Messages are
logged only once redacted.

A model factory's own prints and warnings show on its first build only
(:func:`quiet_after_first`): the checks build a fresh model each.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

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


# --- the console belongs to the progress display ------------------------------------------------
def _inherited_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of ``logger`` reaches through propagation (its ancestors')."""
    found: list[logging.Handler] = []
    node: logging.Logger | None = logger.parent
    while node is not None:
        found += [h for h in node.handlers if h not in found]
        node = node.parent if node.propagate else None
    return found


def _to_terminal(h: logging.Handler) -> bool:
    """A handler printing to the process's stdout/stderr (a StreamHandler on them, colorlog's
    included, or rich's RichHandler), not to a file."""
    if getattr(h, "console", None) is not None:  # rich.logging.RichHandler
        return True
    if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler):
        return False
    consoles = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    return any(h.stream is c for c in consoles if c is not None)


@contextlib.contextmanager
def beside_console(progress: bool) -> Iterator[None]:
    """While the progress display shows each check's line (and the summary) on the console,
    the same lines logged through an app's own handlers (Hydra's root console handler in a
    user's app, where this logger propagates) would print each twice: they go to the
    handlers that write elsewhere (the job's log file) only. Restored afterwards."""
    if not progress or not log.propagate:
        yield
        return
    saved = list(log.handlers)
    log.propagate = False
    for h in _inherited_handlers(log):
        if not _to_terminal(h) and h not in log.handlers:
            log.addHandler(h)
    try:
        yield
    finally:
        log.handlers[:] = saved
        log.propagate = True


# --- a fresh model per check, its prints once ---------------------------------------------------
F = TypeVar("F", bound=Callable[..., Any])


def quiet_after_first(factory: F, shown: bool = False) -> F:
    """``factory``, whose builds after the first (or every build, when ``shown``: the first
    was made elsewhere) print nothing to stdout and raise no warnings: a model's own
    "number of parameters" print or a framework's init warning shows once per stage, not
    once per check. Its attributes are kept (``copies_an_instance``)."""
    if getattr(factory, "_tc_quiet", False):
        return factory
    built = [shown]

    @functools.wraps(factory)
    def build(*args: Any, **kwargs: Any) -> Any:
        if not built[0]:
            built[0] = True
            return factory(*args, **kwargs)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return factory(*args, **kwargs)

    build._tc_quiet = True  # type: ignore[attr-defined]
    return build  # type: ignore[return-value]
