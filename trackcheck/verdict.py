"""What a stage's verdict means outside Python: its exit code and its one line on stderr.
The command line, the Hydra callback and the framework callbacks all stop a job with these,
so a failed gate reads and exits the same wherever it ran."""

from __future__ import annotations

import sys

from trackcheck.core import Report, Status
from trackcheck.redact import redact_text
from trackcheck.registry import all_checks

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def one_line(e: BaseException | str) -> str:
    """A message as one line, without secrets: Hydra's and MLflow's span several."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return redact_text("; ".join(lines) or type(e).__name__)


def error(e: BaseException | str) -> None:
    print(f"trackcheck: error: {one_line(e)}", file=sys.stderr)


def blocked_by(report: Report) -> list[str]:
    """The preconditions (the pipeline contract) that failed: the checklist did not run."""
    registry = all_checks()
    bad = (Status.FAIL, Status.ERROR)
    return [
        c.name
        for c in report.checks
        if c.status in bad and c.name in registry and registry[c.name].precondition
    ]


def exit_code(report: Report) -> int:
    """0 passed; 2 when a precondition failed (bad input: the pipeline does not fit the
    checklist, which then could not judge the model); 1 for any other failed gate."""
    if report.passed:
        return EXIT_PASSED
    return EXIT_USAGE if blocked_by(report) else EXIT_FAILED


def report_error(report: Report) -> None:
    """The one line for a stage stopped by a failed precondition."""
    for name in blocked_by(report):
        error(f"{name}: {report[name].message} (report: {report.output_dir}/report.json)")
