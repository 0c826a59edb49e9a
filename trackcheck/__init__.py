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

__version__ = "0.1.0"

from trackcheck.context import Context
from trackcheck.core import CheckResult, ConfigError, Report, SkipCheck, Status
from trackcheck.data.spec import DataSpec, from_datasets
from trackcheck.pipeline import Batch, Pipeline, PipelineError
from trackcheck.registry import all_checks, register
from trackcheck.runner import Gate, Interrupted, OutputError, run
from trackcheck.tasks import Task, make_task

__all__ = [
    "Batch",
    "CheckResult",
    "ConfigError",
    "Context",
    "DataSpec",
    "Gate",
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
