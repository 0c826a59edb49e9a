"""What the contract check's probes share: the Findings they record values and problems
into (judged once, at the end, into one CheckResult), and a map over nested batch inputs.

The probes live in the other ``_contract_*`` modules, one per part of the contract; the
leading underscore keeps them all out of the registry (the package's __init__ is the
registered check).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

from trackcheck.core import CheckResult, Status


class Thresholds(Protocol):
    """The parameters the probes read: ContractParams (in the package's __init__, one reason
    per field), named here so that the probes need not import the check that imports them."""

    prob_atol: float
    mean_rtol: float
    max_scaling_exponent: float
    shift_share: float
    max_repeat_share: float
    excess_duplicates: float
    dataset_items: int
    grad_rtol: float


@dataclass
class Findings:
    """Values measured and problems found, in the order found; judged once at the end."""

    metrics: dict[str, float] = field(default_factory=dict)
    problems: list[tuple[Status, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.problems.append((Status.FAIL, msg))

    def warn(self, msg: str) -> None:
        self.problems.append((Status.WARN, msg))

    def note(self, msg: str) -> None:
        self.notes.append(msg)

    def result(self, checked: list[str]) -> CheckResult:
        fails = [m for s, m in self.problems if s is Status.FAIL]
        warns = [m for s, m in self.problems if s is Status.WARN]
        status = Status.FAIL if fails else Status.WARN if warns else Status.PASS
        items = fails + warns
        if items:
            word = "broken" if fails else "suspicious"
            listed = " ".join(f"({i}) {_sentence(m)}" for i, m in enumerate(items, 1))
            msg = f"contract {word}, {len(items)} problem{'s' * (len(items) > 1)}: {listed}"
        else:
            msg = f"contract holds: {', '.join(checked)} checked"
        if self.notes:
            msg += " Notes: " + " ".join(self.notes)
        rows = [[s.value, m] for s, m in self.problems] + [["note", n] for n in self.notes]
        return CheckResult(
            "contract",
            status,
            msg,
            metrics=self.metrics,
            tables={"findings": {"columns": ["status", "finding"], "rows": rows}},
            value=float(len(fails)),
            threshold="0 broken",
        )


def _sentence(msg: str) -> str:
    return msg if msg.endswith((".", "?", "!")) else msg + "."


def map_tensors(fn: Callable[[Tensor], Tensor], x: Any) -> Any:
    """``x`` with ``fn`` applied to every tensor in it: tensors, mappings (returned as dicts),
    tuples and lists of them, nested; anything else is returned as it is."""
    if isinstance(x, Tensor):
        return fn(x)
    if isinstance(x, Mapping):
        return {k: map_tensors(fn, v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(map_tensors(fn, v) for v in x)
    return x
