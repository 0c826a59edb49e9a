"""The Hydra entry point: compose the config, build plain objects, run the stage, exit code.

Only this module (and the Hydra callback) import Hydra; ``trackcheck.run`` takes the objects
built here. Exit codes: 0 the gate passed, 1 it failed (or Hydra rejected the config),
2 the model/data/tracker could not be built (the one-line error says why).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trackcheck import names, sweep
from trackcheck.config import schema
from trackcheck.core import ConfigError, Report
from trackcheck.data.spec import DataSpec
from trackcheck.names import RUN_FAILED, RUN_FINISHED, RUN_KILLED, RunStatus
from trackcheck.pipeline import Pipeline
from trackcheck.registry import all_checks
from trackcheck.runner import Gate, run
from trackcheck.trackers.base import NoTracker, Tracker, TrackerError

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _available_models() -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    if gh.is_initialized():
        return sorted(gh.config_loader().get_group_options("model"))
    return sorted(p.stem for p in (Path(__file__).parent / "conf" / "model").glob("*.yaml"))


def _instantiate(node: Any, what: str, **kwargs: Any) -> Any:
    try:
        return instantiate(node, **kwargs)
    except Exception as e:  # Hydra wraps the real cause; show it on one line
        cause = e.__cause__ or e
        raise UsageError(
            f"could not build {what} from its config: {type(cause).__name__}: {cause}"
        ) from e


def build_data(cfg: DictConfig) -> DataSpec:
    data = _instantiate(cfg.data, "data")
    if not isinstance(data, DataSpec):
        raise UsageError(
            f"data._target_ returned {type(data).__name__}, not a trackcheck DataSpec: wrap your "
            "datasets with _target_: trackcheck.data.from_datasets (see README)"
        )
    return data


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
    _instantiate(node, "model")
    factory = partial(instantiate, OmegaConf.create(node))
    big = None
    if bigger:
        big_node = OmegaConf.merge(OmegaConf.create(node), bigger)
        _instantiate(big_node, "model.bigger")
        big = partial(instantiate, big_node)
    return factory, big


def build_pipeline(cfg: DictConfig) -> Pipeline:
    """The ``pipeline``, ``loss`` and ``step`` nodes as one Pipeline."""
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
    data = build_data(cfg)
    factory, bigger = build_model_factories(cfg, data)
    optim = _instantiate(cfg.optim, "optim")
    tracker = tracker if tracker is not None else build_tracker(cfg)
    reference = _instantiate(cfg.reference, "reference") if cfg.get("reference") else None
    params = {name: OmegaConf.to_object(cfg.checks[name]) for name in all_checks()}
    pipeline = build_pipeline(cfg)
    config = {str(k): v for k, v in OmegaConf.to_container(cfg, resolve=True).items()}  # type: ignore[union-attr]
    return run(
        factory,
        data,
        checks=list(cfg.checks.run),
        params=params,
        optimizer=optim,
        pipeline=pipeline,
        device=cfg.device,
        seed=cfg.seed,
        gate=Gate(required=list(cfg.gate.required), fail_on_warn=cfg.gate.fail_on_warn),
        tracker=tracker,
        output_dir=output_dir,
        config=config,
        bigger_model=bigger,
        reference_fn=reference,
        run_name=run_name,
        progress=cfg.progress,
    )


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


def gate_then_train(
    cfg: DictConfig, output_dir: str, run_name: str, tracker_args: dict[str, Any] | None = None
) -> Outcome:
    """The stage; when its gate passes and ``cfg.train`` is set, training in the same run."""
    if cfg.model is None:
        raise UsageError(no_model_message())
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


def multirun_job(cfg: DictConfig, hc: Any, run_name: str) -> Any:
    """One job of a sweep (``-m``): record its verdict in the sweep dir and RETURN a value.

    Never raises for a failed gate or a broken job: Hydra's BasicSweeper would re-raise the
    first failure after the batch and skip ``on_multirun_end`` (no summary). The value is
    what an optimising sweeper reads (see ``sweep.job_value``).
    """
    sweep_dir = Path(hc.runtime.cwd) / hc.sweep.dir  # absolute, even with hydra.job.chdir
    record = sweep.JobRecord(
        num=hc.job.num, overrides=list(hc.overrides.task), output_dir=hc.runtime.output_dir
    )
    outcome: Outcome | None = None
    stopped_by = sweep.stop_requested(sweep_dir)
    if stopped_by is not None:
        record.status = sweep.SKIPPED
        record.message = f"not run: fail-fast after job {stopped_by} failed"
    else:
        try:
            args = sweep.tracker_args(cfg.tracker, sweep.read_context(sweep_dir))
            outcome = gate_then_train(cfg, record.output_dir, f"{run_name}-{record.num}", args)
            record.set_report(outcome.report)
        except (UsageError, TrackerError, ConfigError) as e:
            print(f"trackcheck: error: job {record.num}: {e}", file=sys.stderr)
            record.message = str(e)
        except Exception as e:  # noqa: BLE001 - one broken job must not stop the others
            traceback.print_exc()
            record.message = f"{type(e).__name__}: {e}"
    sweep.save_job(sweep_dir, record, fail_fast=cfg.sweep.fail_fast)
    train_result = outcome.train_result if outcome is not None else None
    failed_value = cfg.sweep.failed_value  # a list for several objectives: return it plain
    if OmegaConf.is_config(failed_value):
        failed_value = OmegaConf.to_container(failed_value)
    return sweep.job_value(record, failed_value, train_result)


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


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig) -> Any:
    global _exit_code
    hc = HydraConfig.get()
    run_name = names.run_name(hc.runtime.choices.get("model", "model"))
    if hc.mode == RunMode.MULTIRUN:
        return multirun_job(cfg, hc, run_name)
    try:
        outcome = gate_then_train(cfg, hc.runtime.output_dir, run_name)
    except (UsageError, TrackerError, ConfigError) as e:  # bad input, not a failed gate: exit 2
        print(f"trackcheck: error: {e}", file=sys.stderr)
        _exit_code = EXIT_USAGE
        return None
    _exit_code = EXIT_PASSED if outcome.report.passed else EXIT_FAILED
    return outcome.report.status


def register_configs() -> None:
    ConfigStore.instance().store(name="trackcheck_schema", node=schema())


def main() -> None:
    register_configs()
    hydra_main()
    # a sweep's exit code: non-zero when any job failed (the summary of on_multirun_end)
    summary = sweep.take_summary()
    sys.exit(summary.exit_code if summary is not None else _exit_code)
