"""Run the selected checks: validate, execute, publish.

``validate`` checks every choice a user can get wrong (check names, their params, the gate's
names) before any model is built; ``execute`` runs each check on a fresh, seeded model with
its crash isolated as ERROR; ``publish`` writes report.json first, then the HTML page and the
tracker run. This is the library's entry point and takes plain Python objects; Hydra stays
in ``cli.py``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trackcheck.context import Context, Meter, ModelFactory, OptimizerFactory
from trackcheck.core import CheckResult, ConfigError, Report, SkipCheck, Status
from trackcheck.data.spec import DataSpec
from trackcheck.names import DEFAULT_LR, RUN_FAILED, RUN_FINISHED, RUN_KILLED
from trackcheck.pipeline import LossFn, Pipeline, PipelineError, StepFn
from trackcheck.redact import redact
from trackcheck.registry import CheckSpec, all_checks
from trackcheck.trackers import Tracker, log_report, make_tracker


@dataclass
class Gate:
    """Which results fail the stage. ``required``: check names, or ``all``."""

    required: Sequence[str] = ("all",)
    fail_on_warn: bool = False

    def failing(self, results: Iterable[CheckResult]) -> list[str]:
        bad = {Status.FAIL, Status.ERROR} | ({Status.WARN} if self.fail_on_warn else set())
        req = set(self.required)
        return [r.name for r in results if r.status in bad and ("all" in req or r.name in req)]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device} asked for, but CUDA is not available here: use device=auto"
        )
    return dev


def select_checks(selection: str | Sequence[str] = "all") -> list[CheckSpec]:
    """``all``, ``fast``, or check names (which may include those two words)."""
    registry = all_checks()
    names = [selection] if isinstance(selection, str) else list(selection)
    chosen: list[str] = []
    for n in names:
        if n == "all":
            picked = list(registry)
        elif n == "fast":
            picked = [k for k, s in registry.items() if s.fast]
        elif n in registry:
            picked = [n]
        else:
            known = ", ".join(registry)
            raise ConfigError(f"unknown check {n!r} in checks.run; available: {known}")
        chosen += [p for p in picked if p not in chosen]
    return [registry[n] for n in registry if n in chosen]  # checklist order


def make_params(spec: CheckSpec, given: Any) -> Any:
    if given is None:
        return spec.params()
    if dataclasses.is_dataclass(given) and not isinstance(given, type):
        return given
    return spec.params(**dict(given))


def environment(device: torch.device) -> dict[str, Any]:
    from trackcheck import __version__

    env: dict[str, Any] = {
        "trackcheck": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def run_one(spec: CheckSpec, ctx: Context, params: Any) -> CheckResult:
    """Run one check in isolation: a crash becomes ERROR with the exception's last line."""
    ctx.meter.reset()
    t0 = time.perf_counter()
    try:
        result = spec(ctx, params)
    except SkipCheck as e:
        result = CheckResult(spec.name, Status.SKIP, str(e))
    except (KeyboardInterrupt, PipelineError):  # PipelineError: bad input, not a check's bug
        raise
    except Exception as e:  # noqa: BLE001 - any failure inside a check is that check's ERROR
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        result = CheckResult(spec.name, Status.ERROR, f"{type(e).__name__}: {e}{where}")
    result.name = spec.name
    result.duration_s = time.perf_counter() - t0
    result.n_forward, result.n_backward = ctx.meter.n_forward, ctx.meter.n_backward
    result.model_s = ctx.meter.model_s
    return result


def save_figures(result: CheckResult, out: Path) -> None:
    """Render each figure once to PNG (trackers upload the file) and free it."""
    import matplotlib.pyplot as plt

    for name, fig in list(result.figures.items()):
        if isinstance(fig, str | Path):
            continue
        path = out / "figures" / result.name / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        result.figures[name] = str(path)


def write_report(report: Report, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(json.dumps(report.to_json(), indent=2, default=str))
    return path


def _probe_optimizer(factory: OptimizerFactory) -> None:
    """Build the optimizer once on a dummy parameter: a broken ``optim`` config fails here in
    one line, before any compute, and PyTorch's one-time optimizer imports (about 2 s on a
    small CPU) are paid here instead of inside the first check's time."""
    try:
        factory([nn.Parameter(torch.zeros(1))])
    except Exception as e:  # noqa: BLE001 - any failure means the optim config is unusable
        raise ConfigError(f"the optimizer could not be built: {type(e).__name__}: {e}") from e


def _as_factory(model: ModelFactory | nn.Module) -> ModelFactory:
    if isinstance(model, nn.Module):
        import copy

        # one instance: every check gets a copy of the same init (a factory is better:
        # it lets determinism verify that the seed reaches the init)
        return lambda: copy.deepcopy(model)
    return model


def _pipeline(
    pipeline: Pipeline | None, loss: LossFn | str | None, step: StepFn | None
) -> Pipeline:
    """The pipeline conventions, with ``loss=`` / ``step=`` given directly folded in."""
    pipe = dataclasses.replace(pipeline) if pipeline is not None else Pipeline()
    try:
        if loss is not None:
            pipe.loss = loss
        if step is not None:
            pipe.step = step
        pipe.__post_init__()  # validates the loss spelling
    except PipelineError as e:
        raise ConfigError(str(e)) from e
    if pipe.loss is not None and not callable(pipe.loss) and not pipe.model_loss:
        raise ConfigError(f"loss must be callable(output, target), 'model' or None: {loss!r}")
    if pipe.step is not None and not callable(pipe.step):
        raise ConfigError(f"step must be callable(model, batch, optimizer): {step!r}")
    return pipe


@dataclass
class Plan:
    """Everything validated before any compute: the checks in order, each with its params."""

    specs: list[CheckSpec]
    params: dict[str, Any]
    gate: Gate


def validate(checks: str | Sequence[str], params: dict[str, Any] | None, gate: Gate | None) -> Plan:
    """Every choice a user can get wrong, checked before the first model is built."""
    specs = select_checks(checks)
    if not specs:
        raise ConfigError("checks.run selects no check: name at least one, or use all / fast")
    registry = all_checks()
    given = params or {}
    unknown = [n for n in given if n not in registry]
    if unknown:
        raise ConfigError(
            f"params given for unknown check(s) {unknown}; available: {list(registry)}"
        )
    built = {}
    for spec in specs:
        try:
            built[spec.name] = make_params(spec, given.get(spec.name))
        except TypeError as e:
            raise ConfigError(f"checks.{spec.name}: {e}") from e
    gate = gate or Gate()
    typos = [n for n in gate.required if n != "all" and n not in registry]
    if typos:
        raise ConfigError(
            f"gate.required names unknown check(s) {typos}; available: {list(registry)}"
        )
    return Plan(specs, built, gate)


def execute(plan: Plan, ctx: Context, progress: bool, results: list[CheckResult]) -> None:
    """Run the planned checks in order, appending to ``results`` as each ends (so an
    interrupt keeps the finished ones); each figure is saved as soon as its check ends."""
    from trackcheck.console import Progress

    assert ctx.output_dir is not None
    blocked = ""  # why the remaining checks cannot run: a precondition failed
    with Progress(enabled=progress, total=len(plan.specs)) as bar:
        for spec in plan.specs:
            bar.start(spec.name)
            if blocked:
                result = CheckResult(spec.name, Status.SKIP, blocked)
            else:
                result = run_one(spec, ctx, plan.params[spec.name])
                save_figures(result, ctx.output_dir)
                if spec.precondition and result.status in (Status.FAIL, Status.ERROR):
                    blocked = f"not run: {spec.name} failed, fix it first (see {spec.name})"
            results.append(result)
            bar.done(result)


def publish(report: Report, tracker: Tracker, out: Path, progress: bool) -> None:
    """report.json first (nothing is lost if the tracker fails), then the HTML page, then the
    tracker, then the tracker run's final status."""
    from trackcheck.console import print_summary
    from trackcheck.html import write_html

    report.tracker = tracker.info()
    files = [write_report(report, out)]
    try:
        files.append(write_html(report, out))
        log_report(tracker, report, files)
    except BaseException as e:
        tracker.finish(RUN_KILLED if isinstance(e, KeyboardInterrupt) else RUN_FAILED)
        raise
    if progress:
        print_summary(report)
    tracker.finish(RUN_FINISHED if report.passed else RUN_FAILED)  # prints where the run is


def run(
    model: ModelFactory | nn.Module,
    data: DataSpec,
    *,
    checks: str | Sequence[str] = "all",
    params: dict[str, Any] | None = None,
    optimizer: OptimizerFactory | None = None,
    loss: LossFn | str | None = None,
    step: StepFn | None = None,
    pipeline: Pipeline | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    gate: Gate | None = None,
    tracker: Tracker | str | None = None,
    output_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    bigger_model: ModelFactory | None = None,
    reference_fn: Callable[..., torch.Tensor] | None = None,
    run_name: str = "trackcheck",
    progress: bool = True,
) -> Report:
    """Run the checklist on ``model`` (a factory, ideally) and ``data``; return the Report.

    ``loss``: your loss ``fn(output, target) -> scalar`` (or ``"model"``: the model's own
    ``.loss`` given ``labels=``); ``step``: your training step ``fn(model, batch, optimizer)
    -> loss``; ``pipeline``: how batches and outputs are read (:mod:`trackcheck.pipeline`).
    The report is written to ``output_dir/report.json`` before anything is sent to the
    tracker, so a tracker failure loses nothing. ``report.passed`` is the gate's verdict.
    """
    plan = validate(checks, params, gate)
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="trackcheck-"))
    ctx = Context(
        model_factory=_as_factory(model),
        data=data,
        optimizer_factory=optimizer or default_optimizer,
        device=resolve_device(device),
        seed=seed,
        bigger_model_factory=bigger_model,
        reference_fn=reference_fn,
        output_dir=out,
        meter=Meter(),
        pipeline=_pipeline(pipeline, loss, step),
    )
    ctx.meter.sync = ctx.device.type == "cuda"
    _probe_optimizer(ctx.optimizer_factory)
    tracker = make_tracker(tracker)  # "mlflow", "wandb", "auto" (the caller's active run)
    safe_config = redact(config or {})
    tracker.start(safe_config, run_name)  # fails fast on a bad URI, before any compute

    report = Report([], passed=False, config=safe_config, environment=environment(ctx.device))
    report.output_dir = str(out)
    _execute_guarded(plan, ctx, report, tracker, progress)
    publish(report, tracker, out, progress)
    return report


def _execute_guarded(
    plan: Plan, ctx: Context, report: Report, tracker: Tracker, progress: bool
) -> None:
    """``execute`` into ``report``, then the gate's verdict. An interrupt still writes what
    finished to report.json and ends the tracker run KILLED; a crash outside the checks (a
    check's own crash is its ERROR) ends it FAILED."""
    assert ctx.output_dir is not None
    t0 = time.perf_counter()
    try:
        execute(plan, ctx, progress, report.checks)
    except KeyboardInterrupt:
        report.gated_on = ["interrupted"]
        report.duration_s = time.perf_counter() - t0
        write_report(report, ctx.output_dir)
        tracker.finish(RUN_KILLED)
        raise
    except PipelineError as e:  # the batch, output or loss cannot be read: a config error
        report.gated_on = ["pipeline"]
        report.duration_s = time.perf_counter() - t0
        write_report(report, ctx.output_dir)
        tracker.finish(RUN_FAILED)
        raise ConfigError(str(e)) from e
    except BaseException:
        tracker.finish(RUN_FAILED)
        raise
    report.gated_on = plan.gate.failing(report.checks)
    report.passed = not report.gated_on
    report.duration_s = time.perf_counter() - t0


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam at DEFAULT_LR (3e-3): the optimizer the checks train with unless one is given."""
    return torch.optim.Adam(params, lr=DEFAULT_LR)
