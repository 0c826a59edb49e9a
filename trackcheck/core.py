"""Plain data for check results and the stage report: no torch, no trackers.

A check first measures values (``metrics``, ``series``, ``figures``), then judges them
(``status``, ``message``, ``value`` against ``threshold``), in one function: the values are
kept whatever the verdict, so a tracker plots the numbers of a check that passed as well as
of one that failed. A report is not re-judged after the fact: to judge with other
thresholds, run the check again with other params (they are cheap by design).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackcheck.names import FAILED, PASSED

SCHEMA_VERSION = 1


class Status(str, enum.Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"  # the check itself crashed: the model or data broke it
    SKIP = "skip"  # the check does not apply (no causality check for an image classifier)

    def __str__(self) -> str:
        return self.value


class ConfigError(ValueError):
    """The stage was asked for something that cannot work (an unknown check, an optimizer
    that cannot be built, a missing device); the message says what and how to fix it."""


class SkipCheck(Exception):
    """Raised by a check that does not apply; the message says why (and how to enable it)."""


@dataclass
class CheckResult:
    """What one check measured (values) and what it concluded (verdict)."""

    name: str
    status: Status
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    # series name -> list of (step, value); logged with steps, each on its own x-axis
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    # figure name -> plots.Deferred (or a drawn Figure) while running; then the saved PNG path
    figures: dict[str, Any] = field(default_factory=dict)
    # table name -> {"columns": [...], "rows": [[...], ...]}
    tables: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    value: float | None = None  # the headline number shown in the summary table
    threshold: str = ""
    duration_s: float = 0.0
    n_forward: int = 0
    n_backward: int = 0
    model_s: float = 0.0  # time spent inside the model's forward and backward

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASS, Status.WARN, Status.SKIP)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "metrics": self.metrics,
            "series": {k: [[s, v] for s, v in pts] for k, pts in self.series.items()},
            "figures": {k: str(v) for k, v in self.figures.items() if isinstance(v, str | Path)},
            "tables": self.tables,
            "duration_s": round(self.duration_s, 4),
            "n_forward": self.n_forward,
            "n_backward": self.n_backward,
            "model_s": round(self.model_s, 4),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CheckResult:
        return cls(
            name=d["name"],
            status=Status(d["status"]),
            message=d.get("message", ""),
            metrics=dict(d.get("metrics", {})),
            series={
                k: [(int(s), float(v)) for s, v in pts] for k, pts in d.get("series", {}).items()
            },
            figures=dict(d.get("figures", {})),
            tables=dict(d.get("tables", {})),
            value=d.get("value"),
            threshold=d.get("threshold", ""),
            duration_s=float(d.get("duration_s", 0.0)),
            n_forward=int(d.get("n_forward", 0)),
            n_backward=int(d.get("n_backward", 0)),
            model_s=float(d.get("model_s", 0.0)),
        )


@dataclass
class Report:
    """The stage's outcome. ``passed`` is the gate's verdict, computed by the runner."""

    checks: list[CheckResult]
    passed: bool
    gated_on: list[str] = field(default_factory=list)  # checks whose status failed the gate
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    output_dir: str = ""
    tracker: dict[str, Any] = field(default_factory=dict)  # run id, URL, ... once logged
    # work done once for several checks and counted in none of theirs (the shared training
    # run): row -> {"runs", "steps", "fwd", "bwd", "model_s", "time_s"}
    shared: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return PASSED if self.passed else FAILED

    def __getitem__(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(
            f"no check named {name!r} in this report; ran: {[c.name for c in self.checks]}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "status": self.status,
            "gated_on": self.gated_on,
            "duration_s": round(self.duration_s, 3),
            "checks": [c.to_json() for c in self.checks],
            "config": self.config,
            "environment": self.environment,
            "output_dir": self.output_dir,
            "tracker": self.tracker,
            "shared": self.shared,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Report:
        return cls(
            checks=[CheckResult.from_json(c) for c in d["checks"]],
            passed=d["status"] == PASSED,
            gated_on=list(d.get("gated_on", [])),
            config=dict(d.get("config", {})),
            environment=dict(d.get("environment", {})),
            duration_s=float(d.get("duration_s", 0.0)),
            output_dir=d.get("output_dir", ""),
            tracker=dict(d.get("tracker", {})),
            shared=dict(d.get("shared", {})),
        )
