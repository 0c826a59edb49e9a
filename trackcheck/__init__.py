"""trackcheck: Karpathy's neural-net checklist, run automatically before training.

Without Hydra::

    import trackcheck
    from trackcheck.data import digits
    from trackcheck.models import ResNet

    data = digits()
    report = trackcheck.run(lambda: ResNet([1, 8, 8], 10), data, tracker=None)
    assert report.passed, report.gated_on

``run`` raises ``ConfigError`` when asked for something that cannot work (an unknown check,
an optimizer that cannot be built); its message says what and how to fix it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trackcheck._version import __version__

# The public names, imported on first use (PEP 562): ``import trackcheck`` (which every
# ``python -m trackcheck`` does) then costs no torch import, so ``--help`` and the no-model
# message print in well under a second. name -> the module that defines it.
_EXPORTS = {
    "Batch": "trackcheck.pipeline",
    "CheckResult": "trackcheck.core",
    "ConfigError": "trackcheck.core",
    "Context": "trackcheck.context",
    "DataSpec": "trackcheck.data.spec",
    "Gate": "trackcheck.validate",  # the gate policy's first name, kept for user imports
    "GatePolicy": "trackcheck.validate",
    "Interrupted": "trackcheck.runner",
    "OutputError": "trackcheck.validate",
    "Pipeline": "trackcheck.pipeline",
    "PipelineError": "trackcheck.pipeline",
    "Report": "trackcheck.core",
    "SkipCheck": "trackcheck.core",
    "Status": "trackcheck.core",
    "Task": "trackcheck.tasks",
    "all_checks": "trackcheck.registry",
    "from_datasets": "trackcheck.data.spec",
    "make_task": "trackcheck.tasks",
    "register": "trackcheck.registry",
    "run": "trackcheck.runner",
}

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, eagerly
    from trackcheck.context import Context
    from trackcheck.core import CheckResult, ConfigError, Report, SkipCheck, Status
    from trackcheck.data.spec import DataSpec, from_datasets
    from trackcheck.pipeline import Batch, Pipeline, PipelineError
    from trackcheck.registry import all_checks, register
    from trackcheck.runner import Interrupted, run
    from trackcheck.tasks import Task, make_task
    from trackcheck.validate import Gate, GatePolicy, OutputError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trackcheck' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "Batch",
    "CheckResult",
    "ConfigError",
    "Context",
    "DataSpec",
    "Gate",
    "GatePolicy",
    "Interrupted",
    "OutputError",
    "Pipeline",
    "PipelineError",
    "Report",
    "SkipCheck",
    "Status",
    "Task",
    "__version__",
    "all_checks",
    "from_datasets",
    "make_task",
    "register",
    "run",
]
