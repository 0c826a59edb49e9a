"""The Hydra entry point: compose the config, build plain objects, run the stage, exit code.

Only this module (and the Hydra callback) import Hydra; ``trackcheck.run`` takes the objects
built here. Exit codes (docs/exit-codes.md): 0 the gate passed; 1 it failed; 2 bad input:
Hydra rejected the config, something could not be built or used (model, data, device,
tracker, output dir), or the pipeline contract failed so the checklist could not judge the
model; 130 Ctrl-C, 143 SIGTERM. Every error is one line, ``trackcheck: error: ...``, with no
traceback and no secret in it; a traceback is left only for a crash of trackcheck itself.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trackcheck import cluster, names, startup, sweep
from trackcheck.config import help_schema, schema
from trackcheck.core import ConfigError, Report
from trackcheck.interrupts import raise_terminated
from trackcheck.names import RUN_FAILED, RUN_FINISHED, RUN_KILLED, RunStatus
from trackcheck.redact import redact, redact_args, redact_text, secret_values
from trackcheck.registry import all_checks
from trackcheck.stage_log import quiet_after_first
from trackcheck.trackers.base import NoTracker, Tracker, TrackerError

# re-exported: the verdict's exit codes and one-line messages (trackcheck.verdict)
from trackcheck.verdict import EXIT_FAILED as EXIT_FAILED
from trackcheck.verdict import EXIT_PASSED as EXIT_PASSED
from trackcheck.verdict import EXIT_USAGE as EXIT_USAGE
from trackcheck.verdict import blocked_by as blocked_by
from trackcheck.verdict import error as error
from trackcheck.verdict import exit_code as exit_code
from trackcheck.verdict import one_line as one_line
from trackcheck.verdict import report_error as report_error

# torch comes in with these (and with the checks, when the schema is built), so they are
# imported where used: --help and the no-model message never import torch
if TYPE_CHECKING:
    from trackcheck.data.spec import DataSpec
    from trackcheck.pipeline import Pipeline


def input_errors(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """Bad input of any kind: printed as one line, exit 2 (UsageError: this module's own)."""
    from trackcheck.pipeline import PipelineError

    return (ConfigError, TrackerError, PipelineError, *more)


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _available_models() -> list[str]:
    return _options("model")


def _options(group: str) -> list[str]:
    """The configs of ``group`` on the search path (a ``--config-dir``'s too), else ours."""
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    if gh.is_initialized():
        return sorted(gh.config_loader().get_group_options(group))
    return sorted(p.stem for p in (Path(__file__).parent / "conf" / group).glob("*.yaml"))


def _instantiate(node: Any, what: str, **kwargs: Any) -> Any:
    try:
        return instantiate(node, **kwargs)
    except Exception as e:  # Hydra wraps the real cause; show it on one line
        cause = e.__cause__ or e
        raise UsageError(
            f"could not build {what} from its config: {type(cause).__name__}: {cause}"
        ) from e


def build_data(cfg: DictConfig, data: Any = None) -> DataSpec:
    """``cfg.data`` built (or ``data``, already built from it) and checked to be a DataSpec."""
    from trackcheck.data.spec import DataSpec

    data = _build_data_node(cfg) if data is None else data
    if data is None:
        raise UsageError(
            "no data selected: pick a data config with data=NAME (a data/NAME.yaml of "
            f"yours under --config-dir, or one of: {', '.join(_options('data'))})"
        )
    if not isinstance(data, DataSpec):
        raise UsageError(
            f"data._target_ returned {type(data).__name__}, not a trackcheck DataSpec: wrap your "
            "datasets with _target_: trackcheck.data.from_datasets (see docs/model-and-data.md)"
        )
    return data


def _build_data_node(cfg: DictConfig) -> Any:
    """What ``cfg.data`` builds: None when there is no data node."""
    node = cfg.get("data")
    if node is None:
        return None
    if not OmegaConf.is_dict(node) or not node.get("_target_"):
        raise UsageError(
            "the data config has no _target_: give it one (a function returning a trackcheck "
            "DataSpec, such as trackcheck.data.from_datasets, or a LightningDataModule class)"
        )
    return _instantiate(node, "data")


def build_model_factories(
    cfg: DictConfig, data: DataSpec
) -> tuple[Callable[[], Any], Callable[[], Any] | None]:
    """The model factory, and the bigger one from ``model.bigger`` overrides (if given).

    Each call instantiates the whole node, nested ``_target_`` children included, so every
    check gets a fully fresh model (``_partial_: true`` on the top node would build the
    children once and share them). One model is built here, so a broken model config fails
    at startup. ``out_bias: auto`` is replaced by the bias that carries the train-set prior.
    """
    node = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(node, dict)
    bigger = node.pop("bigger", None)
    if node.get("out_bias") == "auto":
        node["out_bias"] = data.prior_bias(build_pipeline(cfg))
    _instantiate(node, "model")  # its prints and warnings show here, once (stage_log)
    factory = quiet_after_first(partial(instantiate, OmegaConf.create(node)), shown=True)
    big = None
    if bigger:
        big_node = OmegaConf.merge(OmegaConf.create(node), bigger)
        _instantiate(big_node, "model.bigger")
        big = quiet_after_first(partial(instantiate, big_node), shown=True)
    return factory, big


def build_pipeline(cfg: DictConfig) -> Pipeline:
    """The ``pipeline``, ``loss`` and ``step`` nodes as one Pipeline."""
    from trackcheck.pipeline import Pipeline

    pipe = Pipeline(**OmegaConf.to_container(cfg.pipeline))  # type: ignore[arg-type]
    node = cfg.get("loss")
    if isinstance(node, str):
        pipe.loss = node  # "model" (or "task"): validated by the runner
    elif node is not None:
        pipe.loss = _instantiate(node, "loss")
    if cfg.get("step") is not None and cfg.step.get("_target_"):
        pipe.step = _instantiate(cfg.step, "step")
    return pipe


def build_tracker(cfg: DictConfig, extra: dict[str, Any] | None = None) -> Tracker | None:
    """``cfg.tracker``; ``extra`` kwargs come from a sweep (parent run, W&B group)."""
    if cfg.tracker is None:
        return None
    return _instantiate(cfg.tracker, "tracker", **(extra or {}))  # type: ignore[no-any-return]


def build_and_run(
    cfg: DictConfig, output_dir: str, run_name: str, tracker: Tracker | None = None
) -> Report:
    """``train(cfg)`` in lightning-hydra-template terms: everything but Hydra's own plumbing.

    ``tracker``, when given, is used instead of building ``cfg.tracker``.
    """
    from trackcheck.runner import run
    from trackcheck.validate import GatePolicy

    built = _build_data_node(cfg)
    if _is_lightning_datamodule(built):  # lightning-hydra-template: model= a LightningModule
        stage = _lightning_stage(cfg, built)
        factory, data, bigger = stage.pop("model"), stage.pop("data"), None
        stage.pop("device")
        optim, pipeline = stage.pop("optimizer"), None
    else:
        data = build_data(cfg, built)
        factory, bigger = build_model_factories(cfg, data)
        optim, pipeline, stage = _instantiate(cfg.optim, "optim"), build_pipeline(cfg), {}
    tracker = tracker if tracker is not None else build_tracker(cfg)
    reference = _instantiate(cfg.reference, "reference") if cfg.get("reference") else None
    params = {name: OmegaConf.to_object(cfg.checks[name]) for name in all_checks()}
    config = {str(k): v for k, v in OmegaConf.to_container(cfg, resolve=True).items()}  # type: ignore[union-attr]
    return run(
        factory,
        data,
        checks=list(cfg.checks.run),
        params=params,
        optimizer=optim,
        pipeline=pipeline,
        **stage,  # the LightningModule's step and loss
        device=cfg.device,
        seed=cfg.seed,
        gate=GatePolicy(required=list(cfg.gate.required), fail_on_warn=cfg.gate.fail_on_warn),
        tracker=tracker,
        output_dir=output_dir,
        config=config,
        bigger_model=bigger,
        reference_fn=reference,
        run_name=run_name,
        progress=cfg.progress,
        pretrained=cfg.get("pretrained"),
    )


def _is_lightning_datamodule(obj: Any) -> bool:
    """Without importing Lightning: a module that never imported it built no DataModule."""
    pl = sys.modules.get("lightning.pytorch") or sys.modules.get("pytorch_lightning")
    return pl is not None and isinstance(obj, pl.LightningDataModule)


def _lightning_stage(cfg: DictConfig, datamodule: Any) -> dict[str, Any]:
    """``data=`` a LightningDataModule and ``model=`` a LightningModule: the module's own
    step, loss and configure_optimizers on the DataModule's loaders
    (trackcheck.integrations.lightning)."""
    from trackcheck.integrations.lightning import build_stage
    from trackcheck.validate import resolve_device

    if cfg.get("model") is None:
        raise UsageError("data is a LightningDataModule: pick its LightningModule with model=NAME")
    module = _instantiate(cfg.model, "model")
    datamodule.prepare_data()
    return build_stage(module, datamodule, device=resolve_device(cfg.device))


# --- gate, then train --------------------------------------------------------------------------
@dataclass
class Outcome:
    """One job: the stage's report, and the training function's result when it ran."""

    report: Report
    trained: bool = False
    train_result: Any = None


def build_train(cfg: DictConfig) -> Callable[[DictConfig], Any] | None:
    """The user's training function from ``train._target_``, or None.

    Called as ``fn(cfg)`` with the composed config; the node's other keys are bound as
    keyword arguments (``+train.epochs=3`` -> ``fn(cfg, epochs=3)``). Built before the stage
    runs, so a typo in ``_target_`` fails at once (exit 2), not after the checks.
    """
    node = cfg.get("train")
    if node is None or not node.get("_target_"):
        return None
    return _instantiate(node, "train", _partial_=True)  # type: ignore[no-any-return]


class HeldRun:
    """A tracker whose run stays open after a passing stage, so training can log into it.

    The runner closes the run when the stage ends. A pass (FINISHED) is held back until
    ``train`` has run; a failed gate or an interrupt still closes the run at once. Every
    other Tracker method goes straight to the wrapped tracker.
    """

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.held = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)

    def finish(self, status: RunStatus) -> None:
        if status == RUN_FINISHED:
            self.held = True
        else:
            self.tracker.finish(status)

    def train(self, fn: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
        """Run ``fn(cfg)`` inside the held run, then close it (FAILED if ``fn`` raised).

        While ``fn`` runs, the tracker's run is the SDK's current run
        (``tracker.activate()``), so its ``mlflow.log_metric`` / ``wandb.log`` calls land
        beside the sanity panels.
        """
        assert self.held, "train only after a stage that passed"
        try:
            with self.tracker.activate():
                result = fn(cfg)
        except KeyboardInterrupt:
            self.tracker.finish(RUN_KILLED)
            raise
        except BaseException:
            self.tracker.finish(RUN_FAILED)
            raise
        self.tracker.finish(RUN_FINISHED)
        return result


def check_then_train(
    cfg: DictConfig, output_dir: str, run_name: str, tracker_args: dict[str, Any] | None = None
) -> Outcome:
    """The stage; when the gate policy passes it and ``cfg.train`` is set, training in the
    same tracker run."""
    if cfg.model is None:
        raise UsageError(no_model_message())
    from trackcheck import threads  # torch: not for --help

    threads.apply(cfg.threads)  # parallel jobs on one machine: each its share of the cores
    train = build_train(cfg)
    tracker = build_tracker(cfg, tracker_args) or NoTracker()
    if train is None:
        return Outcome(build_and_run(cfg, output_dir, run_name, tracker))
    held = HeldRun(tracker)
    # HeldRun is a Tracker by delegation (__getattr__), which mypy cannot see
    report = build_and_run(cfg, output_dir, run_name, cast(Tracker, held))
    if not report.passed:
        failed = ", ".join(report.gated_on)
        print(f"trackcheck: gate failed on {failed}: not training", file=sys.stderr)
        return Outcome(report)
    return Outcome(report, trained=True, train_result=held.train(train, cfg))


def scrub_hydra_files(folder: Path, secrets: set[str]) -> None:
    """Hydra's copies of the config and the command line (``.hydra/config.yaml``,
    ``overrides.yaml``, ``hydra.yaml``, a sweep's ``multirun.yaml``) with secrets redacted,
    rewritten in place (atomically): they sit in the output dir beside report.json."""
    from trackcheck.html import write_text_atomic

    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except Exception:  # noqa: BLE001 - not ours to parse: leave it
            continue
        clean = redact(data, secrets)
        if clean != data:
            write_text_atomic(path, OmegaConf.to_yaml(OmegaConf.create(clean)))


def _scrub(cfg: DictConfig, hc: Any, *extra: Path) -> set[str]:
    """Scrub the job's Hydra files (and ``extra`` folders); the config's secret values."""
    secrets = secret_values(OmegaConf.to_container(cfg, resolve=False))
    if hc.output_subdir:
        scrub_hydra_files(Path(hc.runtime.output_dir) / hc.output_subdir, secrets)
    for folder in extra:
        scrub_hydra_files(folder, secrets)
    return secrets


def job_run_name(hc: Any, swept: list[str] | None = None) -> str:
    """The name tells runs apart: the job's overrides (the swept ones first), model, data."""
    choices = hc.runtime.choices
    return names.run_name(
        choices.get("model", "model"),
        choices.get("data"),
        redact_args(hc.overrides.task),
        swept or [],
    )


def multirun_job(cfg: DictConfig, hc: Any) -> Any:
    """One job of a sweep (``-m``): record its verdict in the sweep dir and RETURN a value.

    Never raises for a failed gate or a broken job: Hydra's BasicSweeper would re-raise the
    first failure after the batch and skip ``on_multirun_end`` (no summary). The value is
    what an optimising sweeper reads (see ``sweep.job_value``).
    """
    sweep_dir = Path(hc.runtime.cwd) / hc.sweep.dir  # absolute, even with hydra.job.chdir
    secrets = _scrub(cfg, hc, sweep_dir)  # multirun.yaml too
    record = sweep.JobRecord(
        num=hc.job.num,
        overrides=redact_args(hc.overrides.task, secrets),
        output_dir=hc.runtime.output_dir,
    )
    outcome: Outcome | None = None
    cluster.require_sweep_dir(hc, sweep_dir)  # raised: no record of this job reaches the sweep
    stopped_by = sweep.stop_requested(sweep_dir)
    if stopped_by is not None:
        record.status = sweep.SKIPPED
        record.message = f"not run: fail-fast after job {stopped_by} failed"
    else:
        try:
            ctx = sweep.read_context(sweep_dir)
            record.run_name = job_run_name(hc, ctx.swept if ctx else None)
            args = sweep.tracker_args(cfg.tracker, ctx)
            cluster.check_job(cfg, hc, sweep_dir, args)  # outputs, store: the sweep's
            outcome = check_then_train(cfg, record.output_dir, record.run_name, args)
            record.set_report(outcome.report)
        except input_errors(UsageError) as e:
            error(f"job {record.num}: {e}")
            record.message = one_line(e)
        except Exception as e:  # noqa: BLE001 - one broken job must not stop the others
            traceback.print_exc()
            record.message = one_line(f"{type(e).__name__}: {e}")
    sweep.save_job(sweep_dir, record, fail_fast=cfg.sweep.fail_fast)
    train_result = outcome.train_result if outcome is not None else None
    failed_value = cfg.sweep.failed_value  # a list for several objectives: return it plain
    if OmegaConf.is_config(failed_value):
        failed_value = OmegaConf.to_container(failed_value)
    return sweep.job_value(record, failed_value, train_result)


def refuse_shadowed_choices(hc: Any) -> None:
    """A chosen config (``data=digits``) that a ``hydra.searchpath`` dir of the user's has
    too, but trackcheck's shipped one was used (Hydra searches the app's own configs first):
    refused, naming both, rather than silently running on the other data. ``--config-dir``
    puts the user's groups first (startup.user_groups_first), so it never gets here."""
    from hydra._internal.sources_registry import SourcesRegistry

    sources = [s for s in hc.runtime.config_sources if "hydra.searchpath" in s.provider]
    for group, option in hc.runtime.choices.items():
        if not isinstance(option, str) or group.startswith("hydra/"):
            continue
        name = f"{group}/{option}"
        if not (Path(__file__).parent / "conf" / f"{name}.yaml").is_file():
            continue  # not shipped: the user's own is the only one
        for s in sources:
            source = SourcesRegistry.instance().resolve(s.schema)(
                s.provider, f"{s.schema}://{s.path}"
            )
            if source.is_config(name):
                raise UsageError(
                    f"{group}={option} is both trackcheck's shipped {name} (used) and yours in "
                    f"{s.path} (hydra.searchpath comes after trackcheck's configs): give "
                    f"--config-dir {s.path} instead (its groups come first), or rename yours"
                )


def no_model_message() -> str:
    models = ", ".join(_available_models()) or "(none found)"
    return (
        "no model selected. Pick one with +model=NAME, e.g.\n"
        "    python -m trackcheck +model=resnet\n"
        f"available models: {models}\n"
        "your own: add a model/NAME.yaml under --config-dir (or hydra.searchpath) with a "
        "_target_ to your torch.nn.Module"
    )


_exit_code = EXIT_PASSED
_task_started = False  # Hydra got as far as calling hydra_main: its errors are ours now
# a run refused before its stage started: (its output dir, its log's name, the launch dir)
_refused: tuple[Path, str, Path] | None = None


def _refuse(hc: Any) -> None:
    """Exit 2, and the job's dir (Hydra's files only) is removed once Hydra returns."""
    global _exit_code, _refused
    _exit_code = EXIT_USAGE
    _refused = (Path(hc.runtime.output_dir), f"{hc.job.name}.log", Path(hc.runtime.cwd))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig) -> Any:
    global _exit_code, _task_started
    _task_started = True
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return multirun_job(cfg, hc)
    run_name = job_run_name(hc)
    _scrub(cfg, hc)
    try:
        refuse_shadowed_choices(hc)
        outcome = check_then_train(cfg, hc.runtime.output_dir, run_name)
    except UsageError as e:  # bad input, not a failed gate: exit 2
        print(f"trackcheck: error: {redact_text(str(e))}", file=sys.stderr)  # may be help text
        _refuse(hc)
        return None
    except input_errors() as e:
        error(e)
        _refuse(hc)
        return None
    _exit_code = exit_code(outcome.report)
    report_error(outcome.report)
    return outcome.report.status


def register_configs(for_help: bool = False) -> None:
    """The schema Hydra validates against; ``for_help``: the cached one (no torch import)."""
    node = help_schema() if for_help else schema()
    ConfigStore.instance().store(name="trackcheck_schema", node=node)


@contextmanager
def _cli_process() -> Iterator[bool]:
    """For the length of ``main``: Hydra hands its own errors to us (HYDRA_FULL_ERROR, so
    they become one line here instead of its multi-line report), and SIGTERM raises like
    Ctrl-C from the first line on. Both restored afterwards (main runs in-process in tests).
    Yields whether the user set HYDRA_FULL_ERROR=1 (then Hydra's errors keep their trace)."""
    user_set = os.environ.get("HYDRA_FULL_ERROR") is not None
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield user_set and os.environ["HYDRA_FULL_ERROR"] == "1"
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not user_set:
            os.environ.pop("HYDRA_FULL_ERROR", None)


def hydra_error(e: Exception) -> str:
    """Hydra's rejection as one message: what it says, and the cause it wraps (the key)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(e, MissingConfigException):  # "Could not find 'model/nope'", the options
        found, _, _ = str(e).partition("Config search path:")
        head, _, options = found.partition("Available options in")
        listed = ", ".join(o.strip() for o in options.splitlines()[1:] if o.strip())
        return f"{head.strip()}" + (f"; available: {listed}" if listed else "")
    if isinstance(e, OverrideParseException):
        return f"cannot parse the override {e.override!r}: {e}"
    if isinstance(e, OSError):  # before the task, Hydra only writes to the output dir
        return (
            f"cannot write the output dir ({e.filename or ''}): {e.strerror or e}; pick "
            "another with hydra.run.dir=... (hydra.sweep.dir=... for -m)"
        )
    cause = e.__cause__
    if cause is not None and str(cause) not in str(e):
        return f"{e}: {cause}"
    return str(e) or type(e).__name__


def _hydra_main_either_spelling() -> None:
    """``hydra_main``; where Hydra refuses ``data=NAME`` because no config in the defaults
    list selects data (a model config of the user's brings none), once more with
    ``+data=NAME``, and the other way round where the model config brings its data. The
    shipped models bring theirs, a LightningModule's config does not: the user should not
    have to know which."""
    from hydra.errors import ConfigCompositionException

    try:
        hydra_main()
    except ConfigCompositionException as e:
        argv = _respelled(sys.argv, str(e))
        if _task_started or argv is None:
            raise
        saved, sys.argv = sys.argv, argv
        try:
            hydra_main()
        finally:
            sys.argv = saved


# Hydra's refusals of a group override spelled for the other case: (pattern, old, new prefix)
_RESPELL = (
    (r"Could not override '([^']+)'\. No match in the defaults list", "", "+"),
    (r"Multiple values for ([^ .]+)\. To override a value use", "+", ""),
    (r"(\S+) appears more than once in the final defaults list", "+", ""),
)


def _respelled(argv: list[str], why: str) -> list[str] | None:
    """``argv`` with the group override Hydra refused respelled (``data=x`` <-> ``+data=x``),
    or None when ``why`` is no such refusal."""
    for pattern, old, new in _RESPELL:
        found = re.match(pattern, why)
        if found is None:
            continue
        key = f"{old}{found.group(1)}="
        hits = [i for i, a in enumerate(argv) if i > 0 and a.startswith(key)]
        if len(hits) == 1:
            arg = new + argv[hits[0]][len(old) :]
            return [*argv[: hits[0]], arg, *argv[hits[0] + 1 :]]
    return None


def _run_hydra(keep_traces: bool) -> int:
    """``hydra_main`` and the exit code: Hydra's own rejection (a typo'd key, a value of the
    wrong type, an unknown config group, an output dir it cannot create) is bad input, 2."""
    global _task_started, _exit_code, _refused
    _task_started, _exit_code, _refused = False, EXIT_PASSED, None
    try:
        if startup.quick_help(sys.argv[1:]):  # Hydra's --help output, without its slow part
            startup.print_help(sys.argv[1:], "trackcheck.conf", "config")
        else:
            _hydra_main_either_spelling()
    except Exception as e:
        if _task_started or keep_traces:
            raise  # a crash of trackcheck itself (or of the user's train): the trace helps
        error(hydra_error(e))
        return EXIT_USAGE
    if _refused is not None:  # never started: no dir for trackcheck-gate to count as crashed
        startup.remove_unstarted(*_refused)
    # a sweep's exit code: non-zero when any job failed (the summary of on_multirun_end)
    summary = sweep.take_summary()
    return summary.exit_code if summary is not None else _exit_code


def main() -> None:
    startup.fast_exit()  # skip the final garbage collection over torch's objects at exit
    argv = sys.argv[1:]
    help_only = startup.wants_help(argv)
    if not help_only and startup.selects_no_model(argv):  # before Hydra: no output dir
        print(f"trackcheck: error: {no_model_message()}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if not help_only:
        from trackcheck import render

        if startup.figures_in_worker(argv, render.WORKER_MIN_CHECKS):
            render.prestart()  # the figure worker starts up beside this process, not after
    register_configs(for_help=help_only)  # help prints the cached checks node: no torch
    # the console script imports the user's package from the cwd, like python -m
    with startup.cwd_on_path(), startup.user_groups_first(argv), _cli_process() as keep_traces:
        try:
            code = _run_hydra(keep_traces)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: one line, not a traceback
            signum = int(getattr(e, "signum", signal.SIGINT))
            why = str(e)
            if not why or why.startswith("terminated by signal"):  # not from the stage
                why = f"interrupted by {signal.Signals(signum).name}"
            print(f"trackcheck: {redact_text(why)}", file=sys.stderr)
            code = 128 + signum
    sys.exit(code)
