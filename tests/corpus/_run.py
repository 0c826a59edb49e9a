"""Run corpus programs through the full checklist and tabulate the statuses."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import trackcheck
from trackcheck import Report, Status

from . import kwargs

BAD = (Status.FAIL, Status.ERROR)


@dataclass
class Outcome:
    program: str
    seed: int
    statuses: dict[str, str] = field(default_factory=dict)  # check -> pass/fail/...
    messages: dict[str, str] = field(default_factory=dict)  # check -> message (fail/error/warn)
    durations: dict[str, float] = field(default_factory=dict)  # check -> seconds
    crash: str = ""  # the run itself raised (wiring refused, a stage that broke)
    seconds: float = 0.0

    @property
    def bad(self) -> list[str]:
        return [c for c, s in self.statuses.items() if s in ("fail", "error")]

    @property
    def failed(self) -> bool:
        return bool(self.crash or self.bad)

    def explain(self) -> str:
        if self.crash:
            return f"{self.program} seed {self.seed}: run raised {self.crash}"
        return "\n".join(
            f"{self.program} seed {self.seed}: {c} {self.statuses[c]}: {self.messages[c]}"
            for c in self.bad
        )


def run_program(name: str, seed: int = 0, checks: Any = "all") -> Outcome:
    """The full checklist (no tracker, no progress display) on program ``name``."""
    out = tempfile.mkdtemp(prefix=f"corpus-{name}-")
    t0 = time.perf_counter()
    o = Outcome(name, seed)
    try:
        report: Report = trackcheck.run(
            **kwargs(name),
            checks=checks,
            seed=seed,
            tracker=None,
            progress=False,
            output_dir=out,
        )
        for c in report.checks:
            o.statuses[c.name] = str(c.status)
            o.durations[c.name] = c.duration_s
            if c.status in (*BAD, Status.WARN):
                o.messages[c.name] = c.message
    except Exception as e:  # noqa: BLE001 - a program trackcheck refuses is a result too
        o.crash = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        shutil.rmtree(out, ignore_errors=True)
    o.seconds = time.perf_counter() - t0
    return o
