"""The names trackcheck writes, in one room: keys, tags, statuses and the defaults.

Every metric key, summary key, tag and status string that a tracker writes, and that the
gate and the sweep read back, is spelled here once. The backends (``trackers/``), the gate
and the sweep import these names instead of spelling them, so a run written by one is
always found by the other. Nothing here imports the rest of trackcheck or an SDK, so any
module can import it.

The scheme (DESIGN.md, "One naming scheme, mapped onto each tracker"):

- charted: series ``sanity/<check>/<metric>``, each on its own x-axis
  ``sanity/<check>/step`` (W&B's panels: ``sanity-<check>/...``, a section per check);
  ``sanity/passed`` and each check's headline number ``sanity/value/<check>`` are W&B
  summary keys, never charts; the other scalars
  (``sanity/<check>/<metric>``) in the table
  ``sanity/metrics``; pictures and tables under ``sanity/<check>/<name>``; ``sanity/summary``
  (one row per check), ``sanity/report`` (the HTML page);
- summary keys (W&B): the other scalars, ``sanity/<check>/status``, ``.../message`` (of a
  fail/warn/error), ``sanity/passed``, ``sanity/status``, ``sanity/failed_checks``;
- MLflow tags: ``trackcheck.status`` (passed|failed), ``trackcheck.failed_checks``, and for
  each check that failed, errored or warned ``trackcheck.check.<check>`` (fail|error|warn)
  and ``trackcheck.message.<check>``; a check with no tag passed or was skipped; the
  experiment's
  ``mlflow.experimentKind``;
  a sweep's parent run: ``trackcheck.status`` too, ``trackcheck.role``,
  ``trackcheck.sweep_*``, ``trackcheck.failed_jobs`` (a count);
- W&B tags: ``sanity:passed`` / ``sanity:failed`` and ``sanity:fail:<check>`` (at most 64
  characters: W&B rejects longer tags).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

# --- verdicts ----------------------------------------------------------------------------
# the stage's verdict (Report.status, the trackcheck.status tag, sanity:<verdict>)
PASSED: Final = "passed"
FAILED: Final = "failed"
# what the gate and the sweep say of a run or job that has no passed/failed verdict
ERROR: Final = "error"  # it crashed (or stopped) before its stage wrote a verdict
RUNNING: Final = "running"  # gate: no verdict yet, the run is still open
SKIPPED: Final = "skipped"  # sweep: not run, a fail-fast sweep stopped before it

# how a tracker run ends: MLflow's names (W&B maps them onto exit codes)
RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
RUN_FINISHED: Final = "FINISHED"
RUN_FAILED: Final = "FAILED"
RUN_KILLED: Final = "KILLED"  # an interrupt (Ctrl-C)

# --- metric and summary keys (the same in MLflow and W&B) -------------------------------
PREFIX: Final = "sanity"
PASSED_KEY: Final = f"{PREFIX}/passed"  # 1.0/0.0 as a metric, a bool as a W&B summary
STATUS_KEY: Final = f"{PREFIX}/status"  # passed | failed (W&B summary)
FAILED_CHECKS_KEY: Final = f"{PREFIX}/failed_checks"  # comma-separated (W&B summary)
SUMMARY_KEY: Final = f"{PREFIX}/summary"  # the table, one row per check
REPORT_KEY: Final = f"{PREFIX}/report"  # report.html (and report.json beside it)
# every scalar but the headline values goes into this table (check, metric, value), and
# into the W&B run summary
METRICS_KEY: Final = f"{PREFIX}/metrics"
# a config logged into the caller's own run goes under this key (W&B) or prefix (MLflow),
# so it cannot clash with the caller's config
ATTACHED_PARAM_PREFIX: Final = f"{PREFIX}."


def check_key(check: str, name: str) -> str:
    """``sanity/<check>/<name>``: a check's metric, series, figure or table."""
    return f"{PREFIX}/{check}/{name}"


def step_key(check: str) -> str:
    """The x-axis of a check's series."""
    return check_key(check, "step")


def status_key(check: str) -> str:
    """``sanity/<check>/status``: the check's verdict as a W&B summary key."""
    return check_key(check, "status")


def value_key(check: str) -> str:
    """``sanity/value/<check>``: the check's headline number (the summary's value column),
    a W&B summary key (a runs-table column); never a metric or panel, where one value per
    run would be a one-point chart."""
    return f"{PREFIX}/value/{check}"


def message_key(check: str) -> str:
    """``sanity/<check>/message``: a fail/warn/error check's message (W&B summary key)."""
    return check_key(check, "message")


def check_of_status_key(key: str) -> str | None:
    """``sanity/<check>/status`` -> ``<check>``; None for any other key."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == PREFIX and parts[2] == "status":
        return parts[1]
    return None


def figure_key(check: str, name: str, taken: set[str]) -> str:
    """``sanity/<check>/<name>``, suffixed when a metric or series already uses that key."""
    key = check_key(check, name)
    return f"{key}_figure" if key in taken else key


RUN_NAME_MAX: Final = 250  # W&B and MLflow show long names cut; keep them bounded
# overrides left out of a run's name: the model and data choices (in it already) and those
# that say where or how a run is logged, not what it checks
_NOT_IN_NAME = ("model", "data", "tracker", "progress")
_NODES_NOT_IN_NAME = ("tracker", "hydra", "sweep")


def run_name(
    label: str, data: str | None = None, overrides: Sequence[str] = (), swept: Sequence[str] = ()
) -> str:
    """A stage's run name, readable where a run list cuts it: what tells the run apart first
    (the job's Hydra overrides, those of the ``swept`` keys leading), then what it checks,
    ``sanity-<model>-<data>``: ``seed=3 optim.lr=0.01 | sanity-resnet-digits``;
    ``sanity-resnet-digits`` with no overrides. A swept model or data choice leads too.
    Pass ``overrides`` redacted (``redact.redact_args``): names are shown."""
    model = f"{PREFIX}-{label}" + (f"-{data}" if data and data != label else "")
    kept = [o.lstrip("+~") for o in overrides]
    lead, rest = [], []
    for o in kept:
        key = o.split("=", 1)[0]
        if key in swept:
            lead.append(o)
        elif key not in _NOT_IN_NAME and key.split(".", 1)[0] not in _NODES_NOT_IN_NAME:
            rest.append(o)
    lead.sort(key=lambda o: list(swept).index(o.split("=", 1)[0]))
    name = " ".join([*lead, *rest, "|", model]) if lead or rest else model
    return name if len(name) <= RUN_NAME_MAX else name[: RUN_NAME_MAX - 3] + "..."


# --- MLflow tags --------------------------------------------------------------------------
# passed | failed, on a stage's run and a sweep's parent run alike (one run-list column);
# the gate searches by it, leaving the parents (``TAG_ROLE``) out
TAG_STATUS: Final = "trackcheck.status"
TAG_CHECK_PREFIX: Final = "trackcheck.check."  # + <check>: pass | warn | fail | error | skip
TAG_FAILED_CHECKS: Final = "trackcheck.failed_checks"  # comma-separated
TAG_MESSAGE_PREFIX: Final = "trackcheck.message."  # + <check>: a fail/warn/error's message
TAG_SWEEP_ID: Final = "trackcheck.sweep_id"  # on a sweep's parent run and on its jobs' runs
# a sweep's parent run: ``sweep``; the gate counts jobs, not sweeps
TAG_ROLE: Final = "trackcheck.role"
ROLE_SWEEP: Final = "sweep"
TAG_SWEEP_DIR: Final = "trackcheck.sweep_dir"
TAG_FAILED_JOBS: Final = "trackcheck.failed_jobs"  # a count: "1 of 3" (the jobs: description)
# MLflow's own system tags that trackcheck sets
MLFLOW_PARENT_RUN: Final = "mlflow.parentRunId"
MLFLOW_RUN_NAME: Final = "mlflow.runName"
MLFLOW_NOTE: Final = "mlflow.note.content"  # the run's description: the summary in Markdown
MLFLOW_USER: Final = "mlflow.user"
# an experiment's kind: MLflow 3 shows a "Machine learning" experiment with the classic
# runs view (not the GenAI one, which files runs under "Evaluation runs")
MLFLOW_EXPERIMENT_KIND: Final = "mlflow.experimentKind"
EXPERIMENT_KIND_ML: Final = "custom_model_development"
# MLflow 3.17's UI takes the view from a switch of its own (GenAI | Model training, default
# GenAI), kept in the browser; a link with this query opens the classic one
MLFLOW_ML_VIEW: Final = "workflowType=machine_learning"


def check_tag(check: str) -> str:
    return f"{TAG_CHECK_PREFIX}{check}"


def message_tag(check: str) -> str:
    return f"{TAG_MESSAGE_PREFIX}{check}"


def sweep_run_name(sweep_id: str, swept: Sequence[str] = ()) -> str:
    """The name of a sweep's MLflow parent run: what it sweeps first (``swept``: the sweep's
    overrides, ``optim.lr=1e-4,1e-3``), then its id: ``sweep optim.lr=1e-4,1e-3 | <id>``."""
    name = " ".join(["sweep", *swept, "|", sweep_id]) if swept else f"sweep-{sweep_id}"
    return name if len(name) <= RUN_NAME_MAX else name[: RUN_NAME_MAX - 3] + "..."


def sweep_jobs_key(status: str) -> str:
    """``sweep/jobs_<status>``: how many of a sweep's jobs ended so (parent run metric)."""
    return f"sweep/jobs_{status}"


# --- W&B tags -----------------------------------------------------------------------------
WANDB_TAG_MAX: Final = 64  # W&B rejects longer tags
WANDB_TAG_PREFIX: Final = f"{PREFIX}:"  # trackcheck's own tags: replaced on every verdict
WANDB_FAIL_TAG_PREFIX: Final = f"{PREFIX}:fail:"
WANDB_JOB_TYPE: Final = PREFIX  # a sanity run's job_type (and a sweep job's)


def wandb_tag(tag: str) -> str:
    """A tag cut to what W&B accepts."""
    return tag[:WANDB_TAG_MAX]


def wandb_verdict_tag(verdict: str) -> str:
    """``sanity:passed`` or ``sanity:failed``."""
    return f"{WANDB_TAG_PREFIX}{verdict}"


def wandb_fail_tag(check: str) -> str:
    """``sanity:fail:<check>``, cut to 64 characters (the summary keeps the full name)."""
    return wandb_tag(f"{WANDB_FAIL_TAG_PREFIX}{check}")


# --- backends and where their runs go by default ------------------------------------------
BACKEND_NONE: Final = "none"
BACKEND_MLFLOW: Final = "mlflow"
BACKEND_WANDB: Final = "wandb"
DEFAULT_EXPERIMENT: Final = "trackcheck"  # the MLflow experiment (and the W&B project)
DEFAULT_MLFLOW_URI: Final = "sqlite:///mlflow.db"  # MLflow 3's own default store

# --- the optimizer the checks train with, unless the config names one --------------------
# conf/config.yaml's ``optim`` node mirrors these values (YAML cannot import them)
DEFAULT_OPTIMIZER: Final = "torch.optim.Adam"
DEFAULT_LR: Final = 3e-3
