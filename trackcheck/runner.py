"""Run the selected checks: validate, execute, publish.

``validate`` (:mod:`trackcheck.validate`) checks every choice a user can get wrong (check
names, their params and the params' types, the gate's names, device, seed, data sizes,
tracker, output dir) before any model is built and before a tracker run opens; ``execute``
runs each check on a fresh, seeded model with its crash isolated as ERROR; ``publish``
writes report.json first, then the HTML page and the tracker run. Every path out of the
stage (a pass, a failed gate, a broken pipeline, Ctrl-C or SIGTERM, a report that cannot be
written, a tracker that dies) closes the tracker run with its status and keeps whatever was
finished. This is the library's entry point and takes plain Python objects; Hydra stays in
``cli.py``.
"""

from __future__ import annotations

import json
import platform
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trackcheck import stage_log
from trackcheck.context import Context, Meter, ModelFactory, OptimizerFactory
from trackcheck.core import CheckResult, ConfigError, Report, SkipCheck, Status
from trackcheck.data.spec import DataSpec
from trackcheck.gist import with_values
from trackcheck.html import write_html, write_text_atomic
from trackcheck.interrupts import raise_terminated
from trackcheck.names import DEFAULT_LR, RUN_FAILED, RUN_FINISHED, RUN_KILLED, RunStatus
from trackcheck.pipeline import LossFn, Pipeline, PipelineError, StepFn, primary
from trackcheck.redact import first_line, redact, redact_text, secret_values
from trackcheck.registry import CheckSpec
from trackcheck.render import Figures, use_worker
from trackcheck.trackers import Tracker, TrackerError, log_results, make_tracker
from trackcheck.validate import (
    GatePolicy,
    OutputError,
    Plan,
    as_factory,
    check_data,
    check_pretrained,
    check_seed,
    make_pipeline,
    output_dir_of,
    probe_optimizer,
    resolve_device,
    validate,
)


class Interrupted(KeyboardInterrupt):
    """The stage stopped on Ctrl-C or SIGTERM after keeping what had finished; the message
    says what was kept. ``exit_code``: 128 + the signal (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def environment(device: torch.device) -> dict[str, Any]:
    from trackcheck import threads
    from trackcheck._version import __version__

    env: dict[str, Any] = {
        "trackcheck": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    env.update(threads.environment())  # torch_threads, and why (trackcheck.threads)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


# torch's words for inputs whose dtype the model cannot take (uint8 images into a Linear or
# Conv: "mat1 and mat2 must have the same dtype, but got Byte and Float", "Input type
# (unsigned char) and bias type (float) should be the same", "expected scalar type Byte")
DTYPE_ERRORS = ("dtype", "scalar type", "Input type", "not implemented for")


def _input_hint(e: Exception, ctx: Context) -> str:
    """For a dtype crash, what the inputs are and how to convert them; else ''."""
    if not isinstance(e, RuntimeError) or not any(w in str(e) for w in DTYPE_ERRORS):
        return ""
    try:
        x = primary(ctx.head("train", 1).x)
    except Exception:  # noqa: BLE001 - no hint is better than a second crash
        return ""
    if x.is_floating_point() and x.dtype != torch.float64:
        return ""
    if ctx.data.kind == "tokens" and not x.is_floating_point():
        return ""
    fix = "x.float() / 255 for uint8 images" if x.dtype == torch.uint8 else "x.float()"
    return (
        f". The model gets {x.dtype} inputs: convert them to float32 in the dataset, a "
        f"transform or collate_fn ({fix})"
    )


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
        msg = f"{type(e).__name__}: {e}{where}{_input_hint(e, ctx)}"
        result = CheckResult(spec.name, Status.ERROR, msg)
    from trackcheck.checks._shared._nonfinite import annotate

    annotate(ctx, result)  # a non-finite loss seen: where it started, in the message
    result.name = spec.name
    result.threshold = with_values(result.threshold, params)  # the numbers, not their names
    # the shared training run's steps are the stage's own row; a check's reading of it is its
    result.duration_s = time.perf_counter() - t0 + ctx.meter.shift_s
    result.n_forward, result.n_backward = ctx.meter.n_forward, ctx.meter.n_backward
    result.model_s = ctx.meter.model_s
    return result


# how long an interrupted or crashed stage waits for its figures before writing report.html
FIGURES_GRACE_S = 5.0


def write_report(report: Report, out: Path) -> Path:
    """report.json, written atomically: a reader never sees half a file."""
    path = out / "report.json"
    write_text_atomic(path, json.dumps(report.to_json(), indent=2, default=str))
    return path


def execute(
    plan: Plan,
    ctx: Context,
    progress: bool,
    results: list[CheckResult],
    figures: Figures | None = None,
) -> None:
    """Run the planned checks in order, appending to ``results`` as each ends (so an
    interrupt keeps the finished ones); each check's figures go to ``figures`` as soon as
    it ends (drawn in the figure worker while the next check runs, or here and now)."""
    from trackcheck.console import Progress

    assert ctx.output_dir is not None
    figures = figures or Figures(ctx.output_dir, worker=False)
    ctx.finished = results
    ctx.stage = {s.name: plan.params[s.name] for s in plan.specs}
    blocked = ""  # why the remaining checks cannot run: a precondition failed
    with Progress(enabled=progress, total=len(plan.specs)) as bar:
        for spec in plan.specs:
            bar.start(spec.name)
            stage_log.check_started(spec.name)  # trackcheck.log, under Hydra
            if blocked:
                result = CheckResult(spec.name, Status.SKIP, blocked)
            else:
                result = run_one(spec, ctx, plan.params[spec.name])
                figures.submit(result.name, result.figures)
                note_figures([result], figures.notes)
                if spec.precondition and result.status in (Status.FAIL, Status.ERROR):
                    blocked = f"not run: {spec.name} failed, fix it first (see {spec.name})"
            results.append(result)
            bar.done(result)
            stage_log.check_done(result)


def note_figures(results: list[CheckResult], notes: dict[str, dict[str, str]]) -> bool:
    """Each figure that could not be drawn (``notes``: check -> figure -> why) becomes a note
    at the end of its check's message, and leaves its figures; the verdict stands. Whether
    any result changed (notes already applied are not applied twice)."""
    changed = False
    for r in results:
        for name, why in notes.get(r.name, {}).items():
            if r.figures.pop(name, None) is None:
                continue
            r.message = f"{r.message} (figure {name} not drawn: {why.split(': ', 1)[-1]})"
            changed = True
    return changed


def _kept(files: list[Path], tracker: Tracker, logged: bool, status: str) -> str:
    """What survived a broken stage, for its one-line message; ``status``: how the tracker
    run ended, or ``RUNNING`` when it could not be closed."""
    kept = [f"{', '.join(f.name for f in files)} in {files[0].parent}"] if files else []
    info = tracker.info()
    if info.get("run_id"):
        run = f"{info['backend']} run {info['run_id']}"
        if status == "RUNNING":
            kept.append(f"{run} (left RUNNING: it could not be closed)")
        else:
            what = "with the finished checks" if logged else "results not logged"
            kept.append(f"{run} ({status}, {what})")
    return "; kept: " + ", ".join(kept) if kept else "; nothing could be kept"


def _log(tracker: Tracker, report: Report, files: list[Path], verdict: bool) -> None:
    """Everything the report holds into the tracker, the verdict when there is one; any
    failure as TrackerError with one line."""
    try:
        log_results(tracker, report, files)
        if verdict:
            tracker.set_verdict(report)
    except (TrackerError, ConfigError):
        raise
    except Exception as e:  # noqa: BLE001 - whatever the SDK raises: one line, report kept
        why = f"{type(e).__name__}: {first_line(e)}"
        raise TrackerError(f"the tracker failed while logging: {why}") from e


def _close(tracker: Tracker, status: RunStatus, problems: list[Exception]) -> str:
    """End the tracker run; the status it ended with, or RUNNING when it could not be."""
    try:
        tracker.finish(status)
    except Exception as e:  # noqa: BLE001 - reported with the stage's other problems
        problems.append(TrackerError(f"the tracker run could not be closed: {e}"))
        return "RUNNING"
    return status


def publish(
    report: Report,
    tracker: Tracker,
    out: Path,
    progress: bool,
    end: RunStatus | None = None,
    figures: Figures | None = None,
) -> list[Path]:
    """report.json first (nothing is lost if the tracker fails), then the figures still being
    drawn (``figures``), then the HTML page, then the tracker, then the tracker run's final
    status. Each step runs even when an earlier one
    failed (a full disk still lets the tracker get the results); the run is closed on every
    path, FAILED when something failed and KILLED on an interrupt. ``end``: the status of a
    stage that did not finish (no verdict is logged then). The first problem is raised after
    the run is closed, saying what was kept. Returns the report files written."""
    from trackcheck.console import print_summary

    status: RunStatus = end or (RUN_FINISHED if report.passed else RUN_FAILED)
    report.tracker = redact(tracker.info())
    files: list[Path] = []
    problems: list[Exception] = []
    logged = False
    try:
        for write in (write_report, write_html):
            if write is write_html and figures is not None:
                # an interrupted stage waits a few seconds at most: what is left stays missing
                waited = figures.finish(timeout=None if end is None else FIGURES_GRACE_S)
                problems.extend(OutputError(why) for why in waited)
                if note_figures(report.checks, figures.notes) and files:
                    try:  # the notes, in report.json too
                        write_report(report, out)
                    except OSError as e:
                        problems.append(OutputError(f"could not write {files[0]}: {e}"))
            try:
                files.append(write(report, out))
            except OSError as e:
                name = "report.json" if write is write_report else "report.html"
                problems.append(OutputError(f"could not write {out / name}: {e.strerror or e}"))
        try:
            _log(tracker, report, files, verdict=end is None)
            logged = True
        except (TrackerError, ConfigError) as e:
            problems.append(e)
    except KeyboardInterrupt:
        status = RUN_KILLED
        raise
    finally:
        if problems and status == RUN_FINISHED:
            status = RUN_FAILED
        ended = _close(tracker, status, problems)
    stage_log.published(files)
    if progress:
        print_summary(report)
    if problems:
        first = problems[0]
        raise type(first)(f"{first}{_kept(files, tracker, logged, ended)}") from first
    return files


def _redact_results(results: list[CheckResult], secrets: set[str]) -> None:
    """URI passwords and the config's secret values out of every message and table."""
    for r in results:
        r.message = redact_text(r.message, secrets)
        r.threshold = redact_text(r.threshold, secrets)
        r.tables = redact(r.tables, secrets)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the stage runs, SIGTERM raises ``Terminated`` (a KeyboardInterrupt), so it ends
    the stage like Ctrl-C. Only in the main thread, and only where SIGTERM still has its
    default action: a handler of the caller's (Lightning, submitit) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_tracker(tracker: Tracker, config: dict[str, Any], run_name: str) -> None:
    """Open the tracker run (before any compute: a bad URI fails fast); a run that opened
    before a failure is closed FAILED (KILLED on an interrupt)."""
    try:
        tracker.start(config, run_name)
    except BaseException as e:
        problems: list[Exception] = []
        _close(tracker, RUN_KILLED if isinstance(e, KeyboardInterrupt) else RUN_FAILED, problems)
        if isinstance(e, KeyboardInterrupt | TrackerError | ConfigError):
            raise
        why = f"{type(e).__name__}: {first_line(e)}"
        raise TrackerError(f"the tracker could not start its run: {why}") from e


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
    gate: GatePolicy | None = None,
    tracker: Tracker | str | None = None,
    output_dir: str | Path | None = None,
    config: dict[str, Any] | None = None,
    bigger_model: ModelFactory | None = None,
    reference_fn: Callable[..., torch.Tensor] | None = None,
    run_name: str = "trackcheck",
    progress: bool = True,
    pretrained: bool | None = None,
) -> Report:
    """Run the checklist on ``model`` (a factory, ideally) and ``data``; return the Report.

    ``loss``: your loss ``fn(output, target) -> scalar`` (or ``"model"``: the model's own
    ``.loss`` given ``labels=``); ``step``: your training step ``fn(model, batch, optimizer)
    -> loss``; ``pipeline``: how batches and outputs are read (:mod:`trackcheck.pipeline`);
    ``pretrained``: the factory loads trained weights (True), builds a random init (False),
    or None to tell from two builds with different seeds (trackcheck/checks/_shared/_pretrained.py).
    Everything is validated first (ConfigError, before any compute and before a tracker run
    opens). The report is written to ``output_dir/report.json`` before anything is sent to
    the tracker, so a tracker failure loses nothing. ``report.passed`` is the gate's verdict.
    Ctrl-C and SIGTERM raise ``Interrupted`` once report.json/html are written and the
    tracker run is KILLED with the finished checks in it.
    """
    plan = validate(checks, params, gate)
    dev = resolve_device(device)
    check_data(data)
    ctx = Context(
        model_factory=stage_log.quiet_after_first(as_factory(model)),
        data=data,
        optimizer_factory=optimizer or default_optimizer,
        device=dev,
        seed=check_seed(seed),
        bigger_model_factory=stage_log.quiet_after_first(bigger_model) if bigger_model else None,
        reference_fn=reference_fn,
        meter=Meter(),
        pipeline=make_pipeline(pipeline, loss, step),
        pretrained=check_pretrained(pretrained),
    )
    tracker = make_tracker(tracker)  # "mlflow", "wandb", "auto" (the caller's active run)
    ctx.output_dir = out = output_dir_of(output_dir)
    ctx.meter.sync, ctx.meter.device = ctx.device.type == "cuda", ctx.device
    probe_optimizer(ctx.optimizer_factory)
    secrets = secret_values(config or {})
    safe_config = redact(config or {})
    report = Report([], passed=False, config=safe_config, environment=environment(ctx.device))
    report.output_dir = str(out)
    with sigterm_as_interrupt(), stage_log.beside_console(progress):
        _start_tracker(tracker, safe_config, run_name)
        stage_log.tracker_opened(redact(tracker.info()))
        _stage(plan, ctx, report, tracker, progress, secrets)
    return report


def _stage(
    plan: Plan, ctx: Context, report: Report, tracker: Tracker, progress: bool, secrets: set[str]
) -> None:
    """``execute`` into ``report``, the gate's verdict, ``publish``. A stage that did not
    finish still publishes what did: an interrupt ends the tracker run KILLED and raises
    ``Interrupted``; a broken pipeline (PipelineError) ends it FAILED and raises
    ConfigError; any other crash outside the checks (a check's own crash is its ERROR) ends
    it FAILED and is re-raised."""
    assert ctx.output_dir is not None
    t0 = time.perf_counter()
    figures = Figures(ctx.output_dir, worker=use_worker(len(plan.specs)))
    report.shared = ctx.meter.shared  # filled as the stage goes: an interrupted one keeps it
    try:
        execute(plan, ctx, progress, report.checks, figures)
    except BaseException as e:
        report.duration_s = time.perf_counter() - t0
        _redact_results(report.checks, secrets)
        _broken_stage(plan, ctx, report, tracker, e, figures)
        raise AssertionError("unreachable") from e  # _broken_stage always raises
    report.duration_s = time.perf_counter() - t0
    preconditions = [s.name for s in plan.specs if s.precondition]
    report.gated_on = plan.gate.failing(report.checks, preconditions)
    report.passed = not report.gated_on
    _redact_results(report.checks, secrets)
    stage_log.verdict(report)
    publish(report, tracker, ctx.output_dir, progress, figures=figures)


def _broken_stage(
    plan: Plan,
    ctx: Context,
    report: Report,
    tracker: Tracker,
    e: BaseException,
    figures: Figures | None = None,
) -> None:
    """Publish what finished before ``e`` stopped the stage, then raise what the user sees:
    ``Interrupted``, ConfigError (a PipelineError), or ``e`` itself, each saying what was
    kept."""
    assert ctx.output_dir is not None
    interrupted = isinstance(e, KeyboardInterrupt)
    end: RunStatus = RUN_KILLED if interrupted else RUN_FAILED
    report.gated_on = [
        "interrupted" if interrupted else "pipeline" if isinstance(e, PipelineError) else "error"
    ]
    try:
        files = publish(report, tracker, ctx.output_dir, False, end=end, figures=figures)
        note = _kept(files, tracker, True, end)
    except (TrackerError, ConfigError) as problem:  # its message says what was kept
        note = f"; {problem}"
    if interrupted:
        signum = int(getattr(e, "signum", signal.SIGINT))
        n, total = len(report.checks), len(plan.specs)
        during = plan.specs[n].name if n < total else "the report"
        raise Interrupted(
            f"interrupted by {signal.Signals(signum).name} during {during}: {n} of {total} "
            f"checks finished{note}",
            signum,
        ) from e
    if isinstance(e, PipelineError):
        raise ConfigError(f"{e}{note}") from e
    if isinstance(e, ConfigError):
        raise type(e)(f"{e}{note}") from e
    raise e


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam at DEFAULT_LR (3e-3): the optimizer the checks train with unless one is given."""
    return torch.optim.Adam(params, lr=DEFAULT_LR)
