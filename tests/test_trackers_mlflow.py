"""MLflow for real: a sqlite store in tmp_path and a real `mlflow server`, read back with
MlflowClient (tags, metric histories, params, artifacts). No mocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import flat, interrupted_stage, tracked_stage
from helpers.trackers import free_port, fresh_store

from trackcheck import gist
from trackcheck.redact import REDACTED
from trackcheck.trackers import TrackerError
from trackcheck.trackers._mlflow_store import escape_markdown
from trackcheck.trackers.mlflow import MLflowTracker

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

SECRETS = {"wandb": {"api_key": "sk-test-0123456789"}, "db": {"password": "hunter2"}}
CONFIG = {"optim": {"lr": 0.01}, "model": {"width": 32, "out_bias": None}, **SECRETS}


@pytest.fixture
def store(mlflow_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts in ./mlruns
    return fresh_store(mlflow_template, tmp_path)


@pytest.fixture(scope="module")
def logged(mlflow_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One passing stage logged to a fresh sqlite store: (client, run, report)."""
    d = tmp_path_factory.mktemp("mlflow-logged")
    uri = fresh_store(mlflow_template, d)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        report = tracked_stage(MLflowTracker(tracking_uri=uri), d / "out", config=CONFIG)
        client = MlflowClient(tracking_uri=uri)
        yield client, client.get_run(report.tracker["run_id"]), report


def artifact_paths(client: Any, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for a in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def test_passing_stage_is_a_finished_run_tagged_passed(logged):
    client, run, report = logged
    assert report.passed
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "sanity-test"
    assert run.data.tags["trackcheck.status"] == "passed"
    # no finding, no per-check tag: the chips a run shows are what went wrong
    assert not [t for t in run.data.tags if t.startswith("trackcheck.check.")]
    note = run.data.tags["mlflow.note.content"].splitlines()  # the description
    page = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    link = f"{page}/artifactPath/sanity/report.html?workflowType=machine_learning"
    assert note == [f"**trackcheck: PASSED** (2 pass), details: [report.html]({link})"]


def test_the_experiment_is_a_machine_learning_one_and_the_link_opens_its_runs_view(logged):
    client, run, report = logged
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert report.tracker["view"].endswith(
        f"#/experiments/{exp.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning"
    )


def test_config_is_logged_as_flattened_params(logged):
    _, run, _ = logged
    assert run.data.params["optim.lr"] == "0.01"
    assert run.data.params["model.width"] == "32"
    assert run.data.params["model.out_bias"] == "None"


def test_a_checks_parameter_is_a_param_only_when_set_off_its_default(store, tmp_path):
    from trackcheck.registry import get_check

    default = get_check("overfit_batch").params()
    checks = {"overfit_batch": {"max_steps": 7, "max_loss_ratio": default.max_loss_ratio}}
    report = tracked_stage(
        MLflowTracker(tracking_uri=store), tmp_path / "out", config={"checks": checks}
    )
    params = MlflowClient(tracking_uri=store).get_run(report.tracker["run_id"]).data.params
    assert params["checks.overfit_batch.max_steps"] == "7"  # what a user set, to filter on
    assert "checks.overfit_batch.max_loss_ratio" not in params  # the default: report.json has it


def test_secrets_are_redacted_before_mlflow_sees_them(logged, tmp_path):
    client, run, _ = logged
    assert run.data.params["wandb.api_key"] == REDACTED
    assert run.data.params["db.password"] == REDACTED
    local = client.download_artifacts(run.info.run_id, "sanity", str(tmp_path))
    for name in ("report.json", "report.html"):
        text = (Path(local) / name).read_text()
        assert "sk-test-0123456789" not in text and "hunter2" not in text


def test_charts_are_the_curves_only_never_a_single_value(logged):
    """MLflow charts every metric: a value logged once (a check's, the verdict) would be a
    one-point chart. The metrics are the series, each with its steps."""
    client, run, report = logged
    curves = {f"sanity/{c.name}/{k}" for c in report.checks for k in c.series}
    assert curves and set(run.data.metrics) == curves
    history = client.get_metric_history(run.info.run_id, "sanity/overfit_batch/loss")
    logged_series = sorted((m.step, m.value) for m in history)
    assert flat(logged_series) == pytest.approx(flat(report["overfit_batch"].series["loss"]))
    assert len(logged_series) > 1


def test_every_other_scalar_is_in_the_metrics_table_artifact(logged, tmp_path):
    client, run, report = logged
    path = client.download_artifacts(run.info.run_id, "sanity/metrics.json", str(tmp_path))
    table = json.loads(Path(path).read_text())
    assert table["columns"] == ["check", "metric", "value"]
    found = {(c, m): v for c, m, v in table["data"]}
    expected = {(c.name, k): v for c in report.checks for k, v in c.metrics.items()}
    assert len(expected) > 5 and {k: found[k] for k in expected} == pytest.approx(expected)
    assert {("loss_at_init", "duration_s"), ("overfit_batch", "duration_s")} <= set(found)


def test_figures_summary_table_and_reports_are_artifacts(logged, tmp_path):
    client, run, report = logged
    paths = artifact_paths(client, run.info.run_id)
    assert {
        "sanity/overfit_batch/overlay.png",
        "sanity/summary.json",
        "sanity/report.html",
        "sanity/report.json",
    } <= paths
    table = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "sanity/summary.json", str(tmp_path))
        ).read_text()
    )
    assert table["columns"][:5] == ["check", "status", "value", "threshold", "message"]
    assert [row[:2] for row in table["data"]] == [[c.name, "pass"] for c in report.checks]
    value = {row[0]: row[2] for row in table["data"]}["loss_at_init"]  # each check's value
    assert value == pytest.approx(report["loss_at_init"].value)


def test_failed_gate_marks_the_run_failed_and_searchable_by_tag(store, tmp_path):
    report = tracked_stage(MLflowTracker(tracking_uri=store), tmp_path / "out", fail=True)
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(report.tracker["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["trackcheck.check.overfit_batch"] == "fail"
    assert "trackcheck.check.loss_at_init" not in run.data.tags  # it passed
    assert run.data.tags["trackcheck.failed_checks"] == "overfit_batch"
    message = report["overfit_batch"].message
    assert run.data.tags["trackcheck.message.overfit_batch"] == message  # why, for the gate
    # the description's first lines, as the run page shows them before "Show more"
    note = run.data.tags["mlflow.note.content"].splitlines()
    why = escape_markdown(gist.reason(message, others=["loss_at_init"]))
    assert note[0].startswith("**trackcheck: FAILED** (1 fail, 1 pass), details: [report.html](#/")
    assert note[1:] == ["", rf"- **fail** overfit\_batch: {why}"]
    exp = client.get_experiment_by_name("trackcheck")
    found = client.search_runs(
        [exp.experiment_id], filter_string="tags.`trackcheck.status` = 'failed'"
    )
    assert [r.info.run_id for r in found] == [run.info.run_id]


def test_markdown_in_messages_is_escaped_to_show_as_written():
    text = "__getitem__ gave <lambda> [0.1] *x* | a_b #1 `c`"
    # backslash escapes that MLflow's Markdown renderer (showdown) honours; <> as entities
    expected = r"\_\_getitem\_\_ gave &lt;lambda&gt; \[0\.1\] \*x\* \| a\_b \#1 \`c\`"
    assert escape_markdown(text) == expected


def test_interrupt_marks_the_run_killed_and_still_writes_report_json(store, tmp_path):
    tracker = MLflowTracker(tracking_uri=store)
    with pytest.raises(KeyboardInterrupt):
        interrupted_stage(tracker, tmp_path / "out")
    run = MlflowClient(tracking_uri=store).get_run(tracker.run_id)
    assert run.info.status == "KILLED"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["gated_on"] == ["interrupted"]


def test_attaches_to_the_callers_active_run_and_leaves_it_open(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    with mlflow.start_run() as users_run:
        mlflow.log_param("lr", "0.1")
        mlflow.log_metric("train/loss", 1.0, step=5)
        report = tracked_stage(
            MLflowTracker(tracking_uri="sqlite:///elsewhere.db"),
            tmp_path / "out",
            config={"optim": {"lr": 0.01}},
        )
        assert mlflow.active_run().info.run_id == users_run.info.run_id
        mlflow.log_metric("train/loss", 0.5, step=6)  # the user's steps go on undisturbed
        client = MlflowClient(tracking_uri=store)
        during = client.get_run(users_run.info.run_id)
    assert report.tracker["attached"] and report.tracker["run_id"] == users_run.info.run_id
    assert during.info.status == "RUNNING"
    assert during.data.params["lr"] == "0.1" and during.data.params["sanity.optim.lr"] == "0.01"
    assert during.data.tags["trackcheck.status"] == "passed"
    history = client.get_metric_history(users_run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(5, 1.0), (6, 0.5)]
    assert "sanity/overfit_batch/loss" in during.data.metrics
    assert not Path(tmp_path / "elsewhere.db").exists()
    assert client.get_run(users_run.info.run_id).info.status == "FINISHED"  # the user's end


def test_unreachable_server_fails_fast_with_an_instruction(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(TrackerError, match="cannot reach the MLflow server"):
        tracked_stage(MLflowTracker(tracking_uri=uri), tmp_path / "out")


@pytest.mark.slow
def test_a_remote_server_gets_the_same_run(mlflow_server, tmp_path):
    report = tracked_stage(MLflowTracker(tracking_uri=mlflow_server), tmp_path / "out", fail=True)
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(report.tracker["run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["trackcheck.status"] == "failed"
    assert run.data.tags["trackcheck.check.overfit_batch"] == "fail"
    history = client.get_metric_history(run.info.run_id, "sanity/overfit_batch/loss")
    assert flat(sorted((m.step, m.value) for m in history)) == pytest.approx(
        flat(report["overfit_batch"].series["loss"])
    )
    assert {"sanity/overfit_batch/overlay.png", "sanity/report.html", "sanity/report.json"} <= (
        artifact_paths(client, run.info.run_id)
    )
    page = client.download_artifacts(run.info.run_id, "sanity/report.html", str(tmp_path))
    assert "overfit_batch" in Path(page).read_text()
    assert report.tracker["view"].startswith(f"{mlflow_server}/#/experiments/")


# --- a sweep's parent run -----------------------------------------------------------------
def test_a_sweep_parent_shows_what_it_swept_its_verdict_and_a_table_of_its_jobs(store, tmp_path):
    from trackcheck import sweep
    from trackcheck.trackers._mlflow_sweep import close_parent_run, open_parent_run

    node = {"tracking_uri": store}
    overrides = ["+model=mlp", "optim.lr=1e-3,1e3", "seed=1"]
    parent = open_parent_run(node, "trackcheck-1", str(tmp_path), overrides, ["optim.lr"])
    jobs = [
        sweep.JobRecord(0, ["optim.lr=1e-3"], "passed", run_id="a", run_name="optim.lr=1e-3 | x"),
        sweep.JobRecord(1, ["optim.lr=1e3"], "failed", ["loss_decreases"], "b", "optim.lr=1e3 | x"),
    ]
    (tmp_path / "multirun_report.json").write_text("{}")
    summary = sweep.SweepSummary("trackcheck-1", str(tmp_path), jobs)
    close_parent_run(parent, summary, tmp_path / "multirun_report.json")
    run = MlflowClient(tracking_uri=store).get_run(parent["parent_run_id"])
    assert run.info.run_name == "sweep optim.lr=1e-3,1e3 | trackcheck-1"  # the sweep first
    assert run.data.params == {"model": "mlp", "optim.lr": "1e-3,1e3", "seed": "1"}
    assert run.data.tags["trackcheck.status"] == "failed"  # the jobs' column, one for all
    assert run.data.tags["trackcheck.failed_jobs"] == "1 of 2"  # a count
    note = run.data.tags["mlflow.note.content"].splitlines()
    assert note[0] == "**trackcheck sweep: FAILED** (1 of 2 jobs failed)"
    assert note[2] == "| job | run | overrides | verdict | failed checks |"
    exp = run.info.experiment_id
    assert note[5] == (
        rf"| 1 | [optim\.lr=1e3 \| x](#/experiments/{exp}/runs/b) | optim\.lr=1e3 | failed"
        r" | loss\_decreases |"
    )


def test_several_failures_are_named_before_mlflow_cuts_the_description():
    """MLflow shows about three lines of a description before "Show more": with several
    failures their names come first, then a line per failure with its reason."""
    from trackcheck.core import CheckResult, Report, Status
    from trackcheck.trackers.mlflow import markdown_summary

    checks = [
        CheckResult("loss_at_init", Status.PASS, "ok"),
        CheckResult("gradient_flow", Status.FAIL, "the gradient norm grows: lower the lr"),
        CheckResult("prediction_dynamics", Status.WARN, "jitter 0.3: lower the lr"),
        CheckResult("lr_range", Status.FAIL, "configured lr above divergence: lower it"),
    ]
    report = Report(checks, passed=False, gated_on=["gradient_flow", "lr_range"])
    note = markdown_summary(report, "#/r").splitlines()
    assert note[0] == "**trackcheck: FAILED** (2 fail, 1 warn, 1 pass), details: [report.html](#/r)"
    assert note[2] == r"Failed: gradient\_flow, lr\_range; warn: 1"
    assert [ln.split(":")[0] for ln in note[4:]] == [
        r"- **fail** gradient\_flow",
        r"- **fail** lr\_range",
        r"- **warn** prediction\_dynamics",
    ]
