"""Bad input, faults, signals and secrets: what a user sees in each case, as one table.

Every row names what goes wrong and what the user gets: the exception (Python API) or exit
code (CLI) with one line naming the culprit, which report files are on disk (valid JSON),
and how the tracker run ended, read back from a fresh sqlite store ("none": no run was ever
opened). Most rows run in-process, through ``trackcheck.run`` or ``cli.main`` with its argv;
only the exit-code and signal rows start a real ``python -m trackcheck``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.figure
import pytest
import torch
import torch.nn.functional as F
from conftest import blobs
from helpers.cli import trackcheck as trackcheck_cli
from helpers.trackers import free_port, fresh_store, leet_summary
from mlflow import MlflowClient
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import trackcheck
from trackcheck import CheckResult, ConfigError, DataSpec, GatePolicy, Status, cli, make_task
from trackcheck.interrupts import Terminated
from trackcheck.models import MLP
from trackcheck.redact import REDACTED
from trackcheck.registry import _REGISTRY, all_checks, register
from trackcheck.runner import Interrupted
from trackcheck.trackers import TrackerError
from trackcheck.trackers.base import NoTracker
from trackcheck.trackers.mlflow import MLflowTracker
from trackcheck.validate import OutputError

CONTRACT_LANDED = "contract" in all_checks()
needs_contract = pytest.mark.xfail(not CONTRACT_LANDED, reason="the contract check has not landed")
NO_RUN = "none"  # the store holds no run: validation refused before a tracker run opened


# --- tiny inputs --------------------------------------------------------------------------
def tiny() -> nn.Module:
    return MLP([8], 4, width=16)


G = torch.Generator().manual_seed(0)
X, Y = torch.randn(128, 8, generator=G), torch.randint(0, 4, (128,), generator=G)


def data_of(x: torch.Tensor, y: torch.Tensor, n_test: int = 64, **kw: Any) -> DataSpec:
    """Training set (x, y); test set the first ``n_test`` of X, Y."""
    test = TensorDataset(X[:n_test], Y[:n_test])
    kw.setdefault("batch_size", 32)
    return DataSpec(TensorDataset(x, y), test, make_task("multiclass", 4), **kw)


class Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 4).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class Boom(nn.Module):
    def __init__(self) -> None:
        raise RuntimeError("cannot reach postgresql://bob:hunter22@db:5432/features")


class OnlyInputs(Dataset):
    """A dataset that forgot its labels: items are bare tensors."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> torch.Tensor:
        return X[i]


class NoTensorOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> dict[str, str]:
        return {"answer": "forty-two"}


def per_example_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y, reduction="none")


# --- the store, read back -------------------------------------------------------------------
@pytest.fixture
def store(mlflow_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts in ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return fresh_store(mlflow_template, tmp_path)


def runs(uri: str) -> list[Any]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("trackcheck")
    return [] if exp is None else list(client.search_runs([exp.experiment_id]))


def run_state(uri: str) -> str:
    found = runs(uri)
    assert len(found) <= 1, "one stage opens at most one run"
    return found[0].info.status if found else NO_RUN


def assert_reports(out: Path, on_disk: bool) -> dict[str, Any] | None:
    """report.json is valid JSON and report.html a page, or neither is there."""
    if not on_disk:
        assert not (out / "report.json").exists()
        return None
    doc: dict[str, Any] = json.loads((out / "report.json").read_text())
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    assert not list(out.glob(".report*.tmp")), "no temporary file left behind"
    return doc


def one_line(text: str) -> str:
    """The single line of ``text`` (an exception's message)."""
    assert "\n" not in text.strip(), text
    return text.strip()


# --- the Python API table -------------------------------------------------------------------
@dataclass
class Case:
    """One row: ``kw`` overrides of a two-check stage; what the user must get."""

    id: str
    kw: dict[str, Any] = field(default_factory=dict)
    raises: type[BaseException] | None = None  # None: a report comes back
    match: str = ""  # the one-line message (or the culprit check's message), a regex
    reports: bool = False  # report.json and report.html on disk
    state: str = NO_RUN  # the tracker run's final status
    gated_on: list[str] | None = None  # for a report that comes back
    marks: Any = ()


def stage(out: Path, uri: str, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "model": tiny,
        "data": blobs(n=128),
        "checks": ["contract", "loss_at_init"] if CONTRACT_LANDED else ["loss_at_init"],
        "tracker": MLflowTracker(tracking_uri=uri),
        "output_dir": out,
        "progress": False,
        **kw,
    }
    if callable(args["data"]) and not isinstance(args["data"], DataSpec):
        args["data"] = args["data"]()  # a DataSpec that must be built inside the call
    return trackcheck.run(args.pop("model"), args.pop("data"), **args)


def refused(id: str, kw: dict[str, Any], match: str, marks: Any = ()) -> Case:
    """Refused with ConfigError before any compute: no report, no tracker run."""
    return Case(id, kw, ConfigError, match, marks=marks)


def blocked(id: str, kw: dict[str, Any], match: str) -> Case:
    """The pipeline contract fails (its message names the culprit); the rest is skipped."""
    return Case(id, kw, None, match, True, "FAILED", ["contract"], needs_contract)


def unreadable(id: str, kw: dict[str, Any], match: str) -> Case:
    """The seam cannot read the pipeline: ConfigError once both reports are on disk."""
    kept = r".*; kept: report\.json, report\.html"
    return Case(id, kw, ConfigError, match + kept, True, "FAILED")


CUDA = torch.cuda.is_available()
NO_CUDA = pytest.mark.skipif(CUDA, reason="this machine has CUDA")
UINT8 = (X * 30 + 100).clamp(0, 255).to(torch.uint8)
NO_LABELS = DataSpec(OnlyInputs(), OnlyInputs(), make_task("multiclass", 4), batch_size=32)
# fmt: off
API_CASES = [
    # --- checks, params, gate -------------------------------------------------------------
    refused("unknown check", {"checks": ["overfit_btach"]}, r"unknown check 'overfit_btach'"),
    refused("empty selection", {"checks": []}, r"selects no check"),
    refused("params for an unknown check", {"params": {"overfit_btch": {}}},
            r"unknown check\(s\) \['overfit_btch'\]"),
    refused("a typo'd param", {"params": {"overfit_batch": {"max_stepz": 3}}},
            r"checks\.overfit_batch: .*max_stepz"),
    refused("a string for an int param", {"params": {"overfit_batch": {"max_steps": "abc"}}},
            r"checks\.overfit_batch\.max_steps='abc': expected int"),
    refused("a float for an int param", {"params": {"overfit_batch": {"max_steps": 2.5}}},
            r"checks\.overfit_batch\.max_steps=2\.5: expected int"),
    refused("a bool for an int param", {"params": {"loss_at_init": {"n_examples": True}}},
            r"checks\.loss_at_init\.n_examples=True: expected int"),
    refused("a typo in gate.required", {"gate": GatePolicy(required=["overfit_batchh"])},
            r"gate\.required names unknown check\(s\) \['overfit_batchh'\]"),
    refused("gate.required names an unselected check",
            {"gate": GatePolicy(required=["overfit_batch"])},
            r"gate\.required names \['overfit_batch'\], which checks\.run does not select"),
    # --- device, seed, tracker, optimizer, loss, step, model, data ---------------------------
    refused("device=banana", {"device": "banana"}, r"device='banana' is not a device name"),
    refused("device=cuda without a GPU", {"device": "cuda"}, r"CUDA is not available", NO_CUDA),
    refused("a CUDA index past the last GPU", {"device": "cuda:99"}, r"device=cuda:99"),
    refused("device=meta", {"device": "meta"}, r"device=meta: trackcheck runs on cpu, cuda"),
    refused("seed=10**23", {"seed": 10**23}, r"seed=10{23}: out of range"),
    refused("a negative seed", {"seed": -1}, r"seed=-1: out of range"),
    refused("seed=1e23, a float", {"seed": 1e23}, r"seed=1e\+23: expected an integer"),
    refused("a bool seed", {"seed": True}, r"seed=True: expected an integer"),
    refused("a misspelled tracker", {"tracker": "mlfow"}, r"tracker='mlfow': expected none"),
    refused("a tracker that is none", {"tracker": object()}, r"not a Tracker, it has no start"),
    refused("an optimizer that cannot be built",
            {"optimizer": lambda ps: torch.optim.SGD(ps, lr="abc")},
            r"the optimizer could not be built"),
    refused("a misspelled loss", {"loss": "modle"}, r"modle"),
    refused("a step that is no function", {"step": 3}, r"step must be callable"),
    refused("a model that is no factory", {"model": 42}, r"model must be an nn\.Module"),
    refused("data that is no DataSpec", {"data": (X, Y)}, r"must be a trackcheck DataSpec"),
    refused("an empty training set", {"data": data_of(X[:0], Y[:0])}, r"the train set is empty"),
    refused("an empty test set", {"data": data_of(X, Y, n_test=0)}, r"the test set is empty"),
    refused("a one-example dataset", {"data": data_of(X[:1], Y[:1])},
            r"training set has 1 example; the checklist needs at least 2"),
    refused("batch_size=0", {"data": lambda: data_of(X, Y, batch_size=0)},
            r"data\.batch_size=0: expected a positive integer"),
    # --- the pipeline contract fails: the gate fails on it, the rest is skipped --------------
    blocked("float labels for multiclass", {"data": data_of(X, Y.float() + 0.7)},
            r"the class ids are floats with fractional parts"),
    blocked("labels out of range", {"data": data_of(X, Y + 3)},
            r"class id 6 >= data\.num_outputs=4"),
    blocked("no trainable parameter", {"model": Frozen}, r"no parameter requires grad"),
    blocked("a non-scalar loss", {"loss": per_example_loss}, r"not a scalar tensor"),
    blocked("an output that does not fit", {"model": lambda: MLP([8], 3)},
            r"the model outputs \[\d+, 3\] for a multiclass task"),
    blocked("uint8 inputs", {"data": data_of(UINT8, Y)},
            r"Byte and Float.*torch\.uint8 inputs: convert them to float32.*x\.float\(\) / 255"),
    blocked("a model that raises in __init__, a password in its message", {"model": Boom},
            rf"RuntimeError: cannot reach postgresql://bob:{re.escape(REDACTED)}@db"),
    # --- the seam cannot read the pipeline --------------------------------------------------
    unreadable("a batch without a target", {"data": NO_LABELS},
               r"a batch is a Tensor: expected \(inputs, target\)"),
    unreadable("an output without a tensor", {"model": NoTensorOut},
               r"the model returned a dict with keys \['answer'\]"),
]
# fmt: on


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in API_CASES])
def test_python_api(case: Case, store: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    if case.raises is not None:
        with pytest.raises(case.raises) as err:
            stage(out, store, **case.kw)
        assert re.search(case.match, one_line(str(err.value))), str(err.value)
        assert_reports(out, case.reports)
    else:
        report = stage(out, store, **case.kw)
        doc = assert_reports(out, True)
        assert doc is not None and doc["gated_on"] == case.gated_on == report.gated_on
        culprit = report[case.gated_on[0]] if case.gated_on else None
        assert culprit is not None and re.search(case.match, culprit.message), culprit.message
        assert all(c.status == Status.SKIP for c in report.checks[1:]), "blocked by the contract"
    assert run_state(store) == case.state


# --- faults while the stage runs ------------------------------------------------------------
@pytest.fixture
def temp_check() -> Iterator[Callable[..., Any]]:
    """Register a throw-away check (after loss_at_init) for one test."""
    before = dict(all_checks())

    def add(name: str, fn: Callable[[Any, Any], CheckResult]) -> str:
        @dataclass
        class NoParams:
            pass

        register(name, NoParams, order=999)(fn)
        return name

    yield add
    _REGISTRY.clear()
    _REGISTRY.update(before)


def raising(exc: BaseException) -> Callable[[Any, Any], CheckResult]:
    def check(ctx: Any, p: Any) -> CheckResult:
        raise exc

    return check


def summarised(uri: str) -> list[str]:
    """The checks in the run's ``sanity/summary.json`` table (one row per finished check,
    with its value: MLflow charts every metric, so the values are not metrics)."""
    import tempfile

    (run,) = runs(uri)
    with tempfile.TemporaryDirectory() as d:
        path = MlflowClient(uri).download_artifacts(run.info.run_id, "sanity/summary.json", d)
        table = json.loads(Path(path).read_text())
    return [row[0] for row in table["data"]]


@pytest.mark.parametrize(
    "exc,signum",
    [(KeyboardInterrupt(), signal.SIGINT), (Terminated("SIGTERM"), signal.SIGTERM)],
    ids=["Ctrl-C", "SIGTERM"],
)
def test_an_interrupt_keeps_both_reports_and_logs_the_finished_checks_to_a_killed_run(
    exc: BaseException, signum: int, store: str, tmp_path: Path, temp_check: Any
) -> None:
    name = temp_check("t_interrupt", raising(exc))
    with pytest.raises(Interrupted) as err:
        stage(tmp_path / "out", store, checks=["loss_at_init", name])
    assert err.value.exit_code == 128 + signum
    assert re.search(
        rf"interrupted by {signal.Signals(signum).name} during t_interrupt: 1 of 2 checks "
        r"finished; kept: report\.json, report\.html in .*, mlflow run \w+ \(KILLED",
        one_line(str(err.value)),
    )
    doc = assert_reports(tmp_path / "out", True)
    assert doc is not None and doc["gated_on"] == ["interrupted"]
    assert [c["name"] for c in doc["checks"]] == ["loss_at_init"]
    assert run_state(store) == "KILLED"
    assert "loss_at_init" in summarised(store)  # the finished check's row, its value
    (run,) = runs(store)
    assert "trackcheck.status" not in run.data.tags  # interrupted: no verdict


def test_an_interrupt_leaves_the_finished_checks_in_a_failed_wandb_run(
    wandb_offline: Path,
    tmp_path: Path,
    temp_check: Any,
) -> None:
    from trackcheck.trackers.wandb import WandbTracker

    tracker = WandbTracker(project="tc-test")
    name = temp_check("t_interrupt", raising(Terminated("SIGTERM")))
    with pytest.raises(Interrupted, match=r"wandb run \w+ \(KILLED, with the finished checks\)"):
        stage(tmp_path / "out", "unused", checks=["loss_at_init", name], tracker=tracker)
    summary = leet_summary(str(tracker.run.settings.sync_dir))
    assert summary["state"] == "failed" and summary["exit_code"] == 130
    assert "sanity/value/loss_at_init" in summary["summary"]  # its value; the rest in the
    assert "sanity/metrics" in summary["summary"]  # metrics table
    assert assert_reports(tmp_path / "out", True)


def test_an_interrupt_while_writing_the_reports_still_kills_the_run(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*a: Any) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr("trackcheck.runner.write_html", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stage(tmp_path / "out", store)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["checks"]
    assert run_state(store) == "KILLED"


def full_disk(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Writing ``name`` fills the disk: half the text lands, then ENOSPC."""
    real = Path.write_text

    def write_text(self: Path, text: str, *a: Any, **kw: Any) -> int:
        if self.name.startswith(f".{name}.") or self.name == name:
            real(self, text[: len(text) // 2], *a, **kw)
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, text, *a, **kw)

    monkeypatch.setattr(Path, "write_text", write_text)


def test_a_full_disk_at_report_json_keeps_the_old_report_whole_and_closes_the_run_failed(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"from": "an earlier stage"}')
    full_disk(monkeypatch, "report.json")
    with pytest.raises(OutputError) as err:
        stage(out, store)
    assert re.search(
        r"could not write .*report\.json: No space left on device; kept: report\.html in .*"
        r"mlflow run \w+ \(FAILED, with the finished checks\)",
        one_line(str(err.value)),
    )
    assert json.loads((out / "report.json").read_text()) == {"from": "an earlier stage"}
    assert (out / "report.html").is_file() and not list(out.glob(".report*"))
    assert run_state(store) == "FAILED"  # not RUNNING forever
    (run,) = runs(store)
    assert run.data.tags["trackcheck.status"] == "passed"  # the checks' verdict reached it
    assert "loss_at_init" in summarised(store)


def test_a_full_disk_at_report_html_keeps_report_json_and_closes_the_run_failed(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full_disk(monkeypatch, "report.html")
    with pytest.raises(OutputError, match=r"could not write .*report\.html: No space left"):
        stage(tmp_path / "out", store)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["status"] == "passed"
    assert not (tmp_path / "out" / "report.html").exists()
    assert run_state(store) == "FAILED"


def test_a_full_disk_while_saving_a_figure_ends_the_stage_failed_with_what_finished(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def savefig(self: Any, *a: Any, **kw: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    with pytest.raises(OutputError, match=r"could not save figure .*overlay\.png: No space"):
        stage(
            tmp_path / "out",
            store,
            checks=["loss_at_init", "overfit_batch"],
            params={"overfit_batch": {"max_steps": 2}},
        )
    doc = assert_reports(tmp_path / "out", True)
    assert doc is not None and [c["name"] for c in doc["checks"]] == ["loss_at_init"]
    assert run_state(store) == "FAILED"


def test_an_unwritable_output_dir_is_refused_before_any_compute(store: str, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("in the way")
    with pytest.raises(OutputError, match=r"the output dir .*a_file/out cannot be written"):
        stage(tmp_path / "a_file" / "out", store)
    assert run_state(store) == NO_RUN


class Flaky(NoTracker):
    """A tracker whose backend breaks while the results are logged."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    def log_metrics(self, metrics: dict[str, float]) -> None:
        raise ConnectionError("backend went away\n  (and a long second line)")

    def finish(self, status: str) -> None:
        self.ended.append(status)


def test_a_tracker_that_breaks_while_logging_is_one_line_and_the_reports_stay(
    tmp_path: Path,
) -> None:
    tracker = Flaky()
    with pytest.raises(TrackerError) as err:
        stage(tmp_path / "out", "unused", tracker=tracker)
    assert re.search(
        r"the tracker failed while logging: ConnectionError: backend went away; kept: "
        r"report\.json, report\.html",
        one_line(str(err.value)),
    )
    assert tracker.ended == ["FAILED"]
    assert assert_reports(tmp_path / "out", True)


# --- MLflow stores that cannot be used ------------------------------------------------------
def read_only(template: Path, folder: Path) -> str:
    """A store sqlite opens read-only (root ignores file modes: a mode=ro URI does not)."""
    fresh_store(template, folder)
    return f"sqlite:///file:{folder / 'mlflow.db'}?mode=ro&uri=true"


def a_folder(template: Path, folder: Path) -> str:
    (folder / "a_folder").mkdir()
    return f"sqlite:///{folder / 'a_folder'}"


def under_a_file(template: Path, folder: Path) -> str:
    (folder / "a_file").write_text("in the way")
    return f"sqlite:///{folder / 'a_file' / 'mlflow.db'}"


def nobody_listening(template: Path, folder: Path) -> str:
    return f"http://bob:pw-1234567@127.0.0.1:{free_port()}"


# fmt: off
STORES = [
    (read_only, r"the MLflow store .* cannot be written \(attempt to write a readonly database"),
    (a_folder, r"the MLflow store .*a_folder cannot be written \(unable to open database file"),
    (under_a_file, r"cannot create the MLflow store .*a_file/mlflow\.db: (Not a dir|File exists)"),
    (nobody_listening,
     rf"cannot reach the MLflow server at http://bob:{re.escape(REDACTED)}@127\.0\.0\.1"),
]
# fmt: on


@pytest.mark.parametrize("uri_of,match", STORES, ids=[f.__name__ for f, _ in STORES])
def test_an_unusable_store_fails_in_seconds_in_one_line_before_any_compute(
    uri_of: Callable[[Path, Path], str],
    match: str,
    mlflow_template: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = uri_of(mlflow_template, tmp_path)
    t0 = time.monotonic()
    with pytest.raises(TrackerError) as err:
        stage(tmp_path / "out", uri)
    assert time.monotonic() - t0 < 15  # MLflow alone retries a folder for about 100 s
    assert re.search(match, one_line(str(err.value))), str(err.value)
    assert "pw-1234567" not in str(err.value)
    assert_reports(tmp_path / "out", False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_a_read_only_store_file_fails_in_one_line(store: str, tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").chmod(0o444)
    with pytest.raises(TrackerError, match=r"cannot be written \(attempt to write a readonly"):
        stage(tmp_path / "out", store)


# --- the console ----------------------------------------------------------------------------
def test_square_brackets_in_messages_print_as_they_are() -> None:
    from trackcheck.console import Progress, console, print_summary

    msg = "multiclass output should be [batch, C] logits, got [32, 3]"
    result = CheckResult("contract", Status.FAIL, msg, threshold="[0, 1]")
    report = trackcheck.Report([result], passed=False, gated_on=["contract"])
    with console.capture() as cap:
        with Progress(enabled=True, total=1) as bar:
            bar.start("contract")
            bar.done(result)
        print_summary(report)
    text = cap.get()
    assert msg in text  # its reason in the summary, whole: it is short


# --- the CLI, in-process: cli.main() with its argv ------------------------------------------
FAST_CLI = ["+model=mlp", "checks.run=[contract,loss_at_init]", "progress=false"]


@pytest.fixture
def cli_run(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """``python -m trackcheck ARGS`` in this process, logging to ``store`` (./mlflow.db):
    (exit code, stderr). The output dir is tmp_path/out."""

    def call(*args: str) -> tuple[int, str]:
        argv = ["trackcheck", *args]
        if not any(a.startswith("hydra.run.dir=") for a in args):
            argv.append(f"hydra.run.dir={tmp_path / 'out'}")
        monkeypatch.setattr(sys, "argv", argv)
        capfd.readouterr()
        with pytest.raises(SystemExit) as done:
            cli.main()
        return int(done.value.code or 0), capfd.readouterr().err

    return call


def the_error(stderr: str) -> str:
    """The one ``trackcheck: error:`` line, and no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("trackcheck: error:")]
    return line


# fmt: off
CLI_CASES = [
    # (id, overrides, the one error line, a regex): exit 2, refused before any compute
    ("a typo'd key", ["checks.loss_at_init.foo=1"],
     r"Key 'foo' not in 'LossAtInitParams'.*full_key: checks\.loss_at_init\.foo"),
    ("seed=1e23", ["seed=1e23"],
     r"seed=1e23: Value '1e\+23' of type 'float' could not be converted to Integer; full_key"),
    ("seed=10**23", ["seed=100000000000000000000000"], r"seed=10{23}: out of range"),
    ("device=banana", ["device=banana"], r"device='banana' is not a device name"),
    ("device=cuda without a GPU", ["device=cuda"], r"CUDA is not available"),
    ("an unknown model", ["+model=nope"], r"Could not find 'model/nope'; available: gpt, mlp"),
    ("an unparsable override", ["checks.run=["], r"cannot parse the override 'checks\.run=\['"),
    ("gate.required with a typo", ["gate.required=[overfit_batchh]"],
     r"gate\.required names unknown check\(s\) \['overfit_batchh'\]"),
    ("checks.run=[]", ["checks.run=[]"], r"checks\.run selects no check"),
    ("data.batch_size=0", ["data.batch_size=0"],
     r"could not build data .*data\.batch_size=0: expected a positive integer"),
    ("a model that raises in __init__", ["model.width=-1"],
     r"could not build model from its config: RuntimeError: .*negative dimension"),
    ("a read-only store", ["tracker.tracking_uri='sqlite:///file:mlflow.db?mode=ro&uri=true'"],
     r"the MLflow store file:mlflow\.db\?mode=ro cannot be written"),
]
# fmt: on


@pytest.mark.parametrize(
    "args,match",
    [
        pytest.param(a, m, id=i, marks=pytest.mark.skipif(CUDA and "cuda" in i, reason="CUDA"))
        for i, a, m in CLI_CASES
    ],
)
def test_cli_refuses_bad_input_with_exit_2_and_one_line(
    args: list[str], match: str, cli_run: Any, store: str, tmp_path: Path
) -> None:
    code, err = cli_run(*FAST_CLI, *args)
    assert code == 2, err
    assert re.search(match, the_error(err)), err
    assert_reports(tmp_path / "out", False)
    assert run_state(store) == NO_RUN


@needs_contract
def test_cli_a_broken_pipeline_contract_exits_2_with_the_reports_on_disk(
    cli_run: Any, store: str, tmp_path: Path
) -> None:
    code, err = cli_run(*FAST_CLI, "model.out_features=3")
    assert code == 2, err
    line = the_error(err)
    assert re.search(r"contract: contract broken.*the model outputs \[\d+, 3\] for a binary", line)
    assert line.endswith(f"(report: {tmp_path / 'out'}/report.json)")
    doc = assert_reports(tmp_path / "out", True)
    assert doc is not None and doc["gated_on"] == ["contract"]
    assert run_state(store) == "FAILED"


def test_cli_an_output_dir_that_cannot_be_made_exits_2(cli_run: Any, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("in the way")
    code, err = cli_run(*FAST_CLI, f"hydra.run.dir={tmp_path / 'a_file' / 'out'}")
    assert code == 2
    assert re.search(
        r"cannot write the output dir \(.*a_file/out\): Not a directory", the_error(err)
    )


def test_cli_a_failed_gate_exits_1_and_a_pass_0(cli_run: Any, store: str, tmp_path: Path) -> None:
    bias = ["+model=mlp", "data=diabetes", "checks.run=[init_bias]", "progress=false"]
    code, err = cli_run(*bias, "model.out_bias=null", f"hydra.run.dir={tmp_path / 'failed'}")
    assert code == 1 and "trackcheck: error" not in err
    assert assert_reports(tmp_path / "failed", True)
    assert cli_run(*bias, f"hydra.run.dir={tmp_path / 'passed'}")[0] == 0
    assert sorted(r.info.status for r in runs(store)) == ["FAILED", "FINISHED"]


# --- secrets: planted, then searched for in every file that was written -----------------------
class KeyedMLP(MLP):
    """A model whose config carries credentials, as a Hugging Face token or a DB URL would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for key in ("ssh_key", "dbpassword", "PASSWORD", "Secret_Key", "private_key", "db_url"):
            kwargs.pop(key, None)
        super().__init__(*args, **kwargs)


SECRETS = {
    "ssh_key": "ssh-ed25519-AAAAC3Nz",
    "dbpassword": "hunter2hunter2",
    "PASSWORD": "Tr0ub4dor-3",
    "Secret_Key": "wJalrXUtnFEMI-K7MDENG",
    "private_key": "-----BEGIN-PRIVATE-KEY-xyz",
}
URI_PASSWORD = "pg-pa55word"
PLANTED = [*SECRETS.values(), URI_PASSWORD]
SECRET_ARGS = [
    f"model._target_={__name__}.KeyedMLP",
    *(f"+model.{k}={v}" for k, v in SECRETS.items()),
    f"+model.db_url=postgresql://bob:{URI_PASSWORD}@db.example.com:5432/features",
]


def leaks(root: Path, *texts: str) -> list[str]:
    """Every file under ``root`` (and each text) that holds a planted secret."""
    found = [f"text {i}" for i, t in enumerate(texts) if any(s in t for s in PLANTED)]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {s}" for s in PLANTED if s.encode() in data]
    return found


def test_no_secret_reaches_any_file_mlflow_or_trackcheck_wrote(
    cli_run: Any, store: str, tmp_path: Path
) -> None:
    code, err = cli_run(*FAST_CLI, *SECRET_ARGS, "+tracker.tags.api_token=" + SECRETS["PASSWORD"])
    assert code == 0, err
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "out" / ".hydra").is_dir()
    (run,) = runs(store)
    assert run.data.params["model.ssh_key"] == REDACTED
    assert (
        run.data.params["model.db_url"]
        == f"postgresql://bob:{REDACTED}@db.example.com:5432/features"
    )
    assert leaks(tmp_path, err) == []  # mlflow.db, mlruns/ artifacts, out/ with .hydra/


def test_no_secret_reaches_any_file_wandb_or_trackcheck_wrote(
    cli_run: Any,
    wandb_offline: Path,
    tmp_path: Path,
) -> None:
    code, err = cli_run(*FAST_CLI, *SECRET_ARGS, "tracker=wandb", "tracker.mode=offline")
    assert code == 0, err
    (log,) = wandb_offline.rglob("run-*.wandb")  # the offline run `wandb sync` would upload
    summary = leet_summary(str(log.parent))
    assert summary["state"] == "finished"
    assert summary["config"]["model"]["Secret_Key"] == REDACTED
    assert leaks(wandb_offline, err) == [] and leaks(tmp_path / "out") == []  # debug logs too


# --- real processes: exit codes and signals -------------------------------------------------
@pytest.mark.slow
def test_a_rejected_config_is_exit_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    p = trackcheck_cli(
        "+model=mlp", "tracker=none", "checks.overfit_batch.max_stepz=5", cwd=tmp_path
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [the_error(p.stderr)]
    assert "Key 'max_stepz' not in 'OverfitBatchParams'" in p.stderr


def signalled(cwd: Path, signum: int) -> tuple[int, str]:
    """``python -m trackcheck`` sent ``signum`` while its second of three checks runs
    (overfit_batch, told to never stop); (exit code, stderr)."""
    cmd = [
        sys.executable,
        "-m",
        "trackcheck",
        "+model=mlp",
        "hydra.run.dir=out",
        "checks.run=[contract,loss_at_init,overfit_batch]"
        if CONTRACT_LANDED
        else "checks.run=[init_bias,loss_at_init,overfit_batch]",
        "checks.overfit_batch.max_steps=100000000",
        "checks.overfit_batch.max_loss_ratio=0.0",
    ]
    environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    p = subprocess.Popen(
        cmd, cwd=cwd, stderr=subprocess.PIPE, text=True, env={**environ, "PYTHONUNBUFFERED": "1"}
    )
    watchdog = threading.Timer(240, p.kill)  # a hung process must not hang the suite
    watchdog.start()
    assert p.stderr is not None
    seen = []
    for line in p.stderr:
        seen.append(line)
        if line.startswith("[2/3]"):  # two checks done, overfit_batch running
            time.sleep(0.3)
            p.send_signal(signum)
            break
    rest = p.stderr.read()
    p.wait()
    watchdog.cancel()
    return p.returncode, "".join(seen) + rest


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_mid_check_keeps_both_reports_kills_the_run_and_prints_one_line(
    signum: int,
    mlflow_template: Path,
    tmp_path: Path,
) -> None:
    uri = fresh_store(mlflow_template, tmp_path)
    code, err = signalled(tmp_path, signum)
    assert code == 128 + signum, err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("trackcheck:")]
    name = signal.Signals(signum).name
    assert re.search(rf"interrupted by {name} during overfit_batch: 2 of 3 checks finished", line)
    doc = assert_reports(tmp_path / "out", True)
    assert doc is not None and len(doc["checks"]) == 2 and doc["gated_on"] == ["interrupted"]
    assert run_state(uri) == "KILLED"
    assert "loss_at_init" in summarised(uri)


# --- a real MLflow server: basic auth, and one that dies mid-stage ----------------------------
class Proxy:
    """A TCP forwarder to the server; ``close()`` is the server dying (connections refused)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                s.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept: the port stops listening
        self.sock.close()
        for s in list(self.open):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.mark.slow
def test_a_basic_auth_uri_works_and_its_password_is_never_shown_or_stored(
    mlflow_server: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    uri = mlflow_server.replace("http://", "http://alice:s3cr3t-pw@")
    report = stage(tmp_path / "out", uri, tracker=MLflowTracker(tracking_uri=uri))
    assert report.passed
    assert report.tracker["tracking_uri"] == mlflow_server.replace(
        "http://", f"http://alice:{REDACTED}@"
    )
    printed = capfd.readouterr()  # MLflow's own "View run ... at: <URI>" included
    assert "s3cr3t-pw" not in printed.out + printed.err
    assert "s3cr3t-pw" not in (tmp_path / "out" / "report.json").read_text()
    run = MlflowClient(tracking_uri=mlflow_server).get_run(report.tracker["run_id"])
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_a_server_that_dies_mid_stage_costs_seconds_one_line_and_keeps_the_report(
    mlflow_server: str,
    tmp_path: Path,
    temp_check: Any,
) -> None:
    proxy = Proxy(int(mlflow_server.rsplit(":", 1)[1]))

    def server_dies(ctx: Any, p: Any) -> CheckResult:
        proxy.close()
        return CheckResult("t_server_dies", Status.PASS, "the server just died")

    name = temp_check("t_server_dies", server_dies)
    uri = f"http://alice:s3cr3t-pw@127.0.0.1:{proxy.port}"
    t0 = time.monotonic()
    with pytest.raises(TrackerError) as err:
        stage(tmp_path / "out", uri, checks=["loss_at_init", name])
    took = time.monotonic() - t0
    line = one_line(str(err.value))
    assert took < 60, took  # MLflow's own retries: 8.5 minutes
    assert re.search(
        r"MLflow \(http://alice:\*+REDACTED\*+@.*\) failed while .*Connection "
        r"refused.*; kept: report\.json, report\.html in .*, mlflow run \w+ \(left "
        r"RUNNING: it could not be closed\)$",
        line,
    ), line
    assert "s3cr3t-pw" not in line
    doc = assert_reports(tmp_path / "out", True)
    assert doc is not None and doc["status"] == "passed"


def test_no_data_selected_says_so_and_how_to_pick_one():
    from omegaconf import OmegaConf

    from trackcheck.cli import UsageError, build_data

    with pytest.raises(UsageError, match=r"no data selected: pick a data config with data=NAME"):
        build_data(OmegaConf.create({"data": None}))
