"""W&B for real, offline: the real SDK writes the run, `wandb leet inspect` reads it back
(state, tags, config, summary, history rows, metric definitions, media files). No mocks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import flat, interrupted_stage, tracked_stage
from helpers.trackers import leet_records, leet_summary, wandb_env

from trackcheck.redact import REDACTED
from trackcheck.trackers import TrackerError
from trackcheck.trackers.wandb import WandbTracker

wandb = pytest.importorskip("wandb")

CONFIG = {"optim": {"lr": 0.01}, "wandb": {"api_key": "sk-test-0123456789"}}


def history(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    wandb_env(monkeypatch, tmp_path / "wb")
    yield tmp_path / "wb"
    wandb.teardown()  # the SDK caches settings per process: the next test starts clean


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One passing stage, offline: (summary, records, run_dir, report)."""
    root = tmp_path_factory.mktemp("wandb-logged")
    with pytest.MonkeyPatch.context() as mp:
        wandb_env(mp, root / "wb")
        tracker = WandbTracker(project="tc-test", group="grp", job_type="sanity", tags=["unit"])
        report = tracked_stage(tracker, root / "out", config=CONFIG)
        run_dir = report.tracker["run_dir"]
        yield leet_summary(run_dir), leet_records(run_dir), Path(run_dir), report
        wandb.teardown()


def test_passing_stage_is_a_finished_run_with_project_group_and_tags(logged):
    summary, records, _, _ = logged
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["project"] == "tc-test"
    assert sorted(summary["tags"]) == ["sanity:passed", "unit"]
    (run,) = [r["run"] for r in records if r["type"] == "run"][:1]
    assert run["run_group"] == "grp" and run["job_type"] == "sanity"


def test_resolved_config_is_logged_with_secrets_redacted(logged):
    summary, _, run_dir, _ = logged
    assert summary["config"]["optim"] == {"lr": 0.01}
    assert summary["config"]["wandb"] == {"api_key": REDACTED}
    assert not [
        p
        for p in run_dir.rglob("*")
        if p.is_file() and p.suffix != ".wandb" and b"sk-test-0123456789" in p.read_bytes()
    ]


def test_summary_keys_hold_each_verdict_and_scalar(logged):
    summary, _, _, report = logged
    s = summary["summary"]
    assert s["sanity/passed"] is True
    assert s["sanity/overfit_batch/status"] == "pass"
    assert s["sanity/loss_at_init/status"] == "pass"
    for c in report.checks:  # every number a check measured: in the run summary
        assert {f"sanity/{c.name}/{k}": s[f"sanity/{c.name}/{k}"] for k in c.metrics} == (
            pytest.approx({f"sanity/{c.name}/{k}": v for k, v in c.metrics.items()})
        )
        assert f"sanity/{c.name}/duration_s" in s


def test_history_holds_only_curves_each_checks_value_is_a_summary_column(logged):
    """Panels come from history keys: only the series are there; each check's value and
    every other number are summary columns, where they make no single-point chart."""
    summary, records, _, report = logged
    keys = {k for h in history(records) for k in h if not k.startswith("_")}
    numbers = {k for k in keys if "." not in k}  # media are logged as <key>._type, .path...
    curves = {f"sanity-{c.name}/{k}" for c in report.checks for k in c.series}
    steps = {f"sanity-{c.name}/step" for c in report.checks if c.series}
    assert curves and numbers == curves | steps
    value = summary["summary"]["sanity/value/loss_at_init"]
    assert value == pytest.approx(report["loss_at_init"].value)


def test_each_checks_panels_sit_in_a_section_of_their_own(logged):
    """W&B sections panels by the key's first segment: one per check, and ``sanity`` for
    the overview (the summary table, the table of numbers, report.html)."""
    _, records, _, report = logged
    keys = {k.split(".")[0] for h in history(records) for k in h if not k.startswith("_")}
    sections: dict[str, set[str]] = {}
    for k in keys:
        first, rest = k.split("/", 1)
        sections.setdefault(first, set()).add(rest)
    assert sections.pop("sanity") == {"summary", "metrics", "report"}
    assert sections["sanity-overfit_batch"] == {"step", "loss", "overlay"}
    assert set(sections) <= {f"sanity-{c.name}" for c in report.checks}


def test_each_series_is_logged_against_its_checks_own_step(logged):
    _, records, _, report = logged
    metrics = {r["metric"]["name"]: r["metric"] for r in records if r["type"] == "metric"}
    assert metrics["sanity-overfit_batch/loss"]["step_metric"] == "sanity-overfit_batch/step"
    rows = [
        (h["sanity-overfit_batch/step"], h["sanity-overfit_batch/loss"])
        for h in history(records)
        if "sanity-overfit_batch/loss" in h
    ]
    expected = report["overfit_batch"].series["loss"]
    assert [step for step, _ in rows] == [step for step, _ in expected]
    assert [v for _, v in rows] == pytest.approx([v for _, v in expected])


def test_series_that_measure_one_thing_share_one_chart(env, tmp_path):
    """A check's compared series (real vs blanked inputs) become one multi-series line
    chart, beside each series' own panel; unlike series (loss and lr) do not."""
    tracker = WandbTracker(project="tc-test")
    tracker.start({}, "sanity-test")
    real = [(0, 2.3), (1, 1.9), (2, 1.2)]
    blanked = [(0, 2.3), (1, 2.2), (2, float("inf"))]  # a point no chart can draw
    tracker.log_series(
        {"sanity/t/train_loss_real": real, "sanity/t/train_loss_blanked": blanked},
        "sanity/t/step",
    )
    tracker.log_series({"sanity/u/loss": real, "sanity/u/lr": real}, "sanity/u/step")
    tracker.finish("FINISHED")
    records = leet_records(str(tracker.run.settings.sync_dir))
    charts = {
        key: chart["panel_config"]["panelDefId"]
        for r in records
        if r["type"] == "config"
        for key, chart in r["config"].get("update", {}).items()
        if key.startswith("_wandb.visualize")
    }
    assert charts == {"_wandb.visualize.sanity-t/train_loss_compared": "wandb/lineseries/v0"}
    (row,) = [h for h in history(records) if "sanity-t/train_loss_compared_table._type" in h]
    files = Path(tracker.run.settings.files_dir)
    table = json.loads((files / row["sanity-t/train_loss_compared_table.path"]).read_text())
    assert table["columns"] == ["step", "lineKey", "lineVal"]
    assert table["data"] == [
        [0, "train_loss_real", 2.3], [1, "train_loss_real", 1.9], [2, "train_loss_real", 1.2],
        [0, "train_loss_blanked", 2.3], [1, "train_loss_blanked", 2.2],
    ]  # fmt: skip


def test_figure_summary_table_and_html_report_are_media_files(logged):
    _, records, run_dir, report = logged
    (row,) = [h for h in history(records) if "sanity/summary._type" in h]
    assert row["sanity-overfit_batch/overlay._type"] == "image-file"
    assert row["sanity/report._type"] == "html-file"
    files = run_dir / "files"
    assert (files / row["sanity-overfit_batch/overlay.path"]).is_file()
    assert (files / row["sanity/report.path"]).read_text().startswith("<!doctype html>")
    table = json.loads((files / row["sanity/summary.path"]).read_text())
    assert table["columns"][:5] == ["check", "status", "value", "threshold", "message"]
    assert [r[:2] for r in table["data"]] == [[c.name, "pass"] for c in report.checks]
    assert json.loads((files / "sanity" / "report.json").read_text())["status"] == "passed"
    numbers = json.loads((files / row["sanity/metrics.path"]).read_text())
    assert numbers["columns"] == ["check", "metric", "value"]
    assert ["loss_at_init", "loss", report["loss_at_init"].metrics["loss"]] in numbers["data"]


def test_failed_gate_ends_the_run_failed_with_failure_tags(env, tmp_path):
    report = tracked_stage(WandbTracker(project="tc-test"), tmp_path / "out", fail=True)
    summary = leet_summary(report.tracker["run_dir"])
    assert summary["state"] == "failed" and summary["exit_code"] == 1
    assert sorted(summary["tags"]) == ["sanity:fail:overfit_batch", "sanity:failed"]
    assert summary["summary"]["sanity/passed"] is False
    message = report["overfit_batch"].message
    assert summary["summary"]["sanity/overfit_batch/message"] == message  # why, for the gate
    assert "sanity/loss_at_init/message" not in summary["summary"]  # a pass needs none


def test_interrupt_ends_the_run_failed_with_the_sigint_exit_code(env, tmp_path):
    tracker = WandbTracker(project="tc-test")
    with pytest.raises(KeyboardInterrupt):
        interrupted_stage(tracker, tmp_path / "out")
    summary = leet_summary(str(tracker.run.settings.sync_dir))
    assert summary["state"] == "failed" and summary["exit_code"] == 130


def test_no_api_key_falls_back_offline_and_prints_one_sync_line(env, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE")  # mode auto decides by itself
    report = tracked_stage(WandbTracker(project="tc-test"), tmp_path / "out")
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "wandb sync" in ln]
    assert len(lines) == 1
    assert "no W&B API key" in lines[0]
    shown = Path(lines[0].split("upload it with: wandb sync ")[1])
    assert shown.resolve() == Path(report.tracker["run_dir"]).resolve()
    assert leet_summary(report.tracker["run_dir"])["state"] == "finished"


def test_api_key_but_unreachable_server_falls_back_offline(env, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)  # a key, but nobody at the other end
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    tracker = WandbTracker(project="tc-test", settings={"base_url": f"http://127.0.0.1:{port}"})
    report = tracked_stage(tracker, tmp_path / "out")
    assert report.tracker["mode"] == "offline"
    assert "cannot reach" in report.tracker["offline"]


@pytest.mark.slow
def test_a_server_that_never_answers_times_out_into_offline(env, tmp_path, monkeypatch):
    """`never hangs`: TCP connects, no HTTP answer ever comes; init_timeout bounds the wait."""
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    tracker = WandbTracker(project="tc-test", init_timeout=3, settings={"base_url": url})
    try:
        report = tracked_stage(tracker, tmp_path / "out")
    finally:
        server.close()
    assert report.tracker["mode"] == "offline"
    assert "wandb.init failed" in report.tracker["offline"]
    assert leet_summary(report.tracker["run_dir"])["state"] == "finished"


def test_attaches_to_the_callers_run_without_moving_its_step(env, tmp_path):
    users_run = wandb.init(
        project="users-project",
        mode="offline",
        config={"lr": 0.1},
        settings=wandb.Settings(silent=True, console="off"),
    )
    for step in range(3):
        users_run.log({"train/loss": 1.0 / (step + 1)}, step=step)
    # tracker="auto": whichever run the caller has open
    report = tracked_stage("auto", tmp_path / "out", config={"optim": {"lr": 0.01}})
    assert report.tracker["attached"] and report.tracker["run_id"] == users_run.id
    assert wandb.run is users_run  # still the user's, still open
    users_run.log({"train/loss": 0.2}, step=3)  # dropped if the stage had moved the step
    users_run.log({"train/loss": 0.1}, step=4)
    users_run.finish()

    summary, records = (
        leet_summary(str(users_run.settings.sync_dir)),
        leet_records(str(users_run.settings.sync_dir)),
    )
    rows = history(records)
    assert flat((h["_step"], h["train/loss"]) for h in rows) == pytest.approx(
        flat([(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.2), (4, 0.1)])
    )
    assert rows[2]["sanity-overfit_batch/overlay._type"] == "image-file"
    assert rows[2]["sanity-overfit_batch/loss_table._type"] == "table-file"  # a line chart
    assert summary["summary"]["sanity/passed"] is True
    assert summary["tags"] == ["sanity:passed"]
    assert summary["config"]["lr"] == 0.1 and summary["config"]["sanity"]["optim"]["lr"] == 0.01
    assert summary["state"] == "finished"


def test_a_stale_run_of_ours_is_finished_not_attached_to(env, tmp_path):
    """Multirun jobs share a process: a job that died mid-stage left its run open."""
    stale = WandbTracker(project="tc-test")
    stale.start({}, "stale-job")
    report = tracked_stage(WandbTracker(project="tc-test"), tmp_path / "out")
    assert not report.tracker["attached"]
    assert report.tracker["run_id"] != stale.run.id
    assert leet_summary(str(stale.run.settings.sync_dir))["state"] == "finished"


def test_online_mode_without_a_key_refuses_instead_of_prompting(env, tmp_path):
    with pytest.raises(TrackerError, match="no W&B API key"):
        WandbTracker(mode="online").start({}, "x")


def test_missing_sdk_becomes_an_install_instruction(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` sees when absent
    with pytest.raises(TrackerError, match="pip install wandb"):
        WandbTracker().start({}, "x")


@pytest.mark.slow
def test_cli_tracker_wandb_runs_offline_without_a_key(env, tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "trackcheck",
            "+model=mlp",
            "tracker=wandb",
            "checks.run=[loss_at_init]",
            "progress=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (line,) = [ln for ln in p.stderr.splitlines() if "wandb sync" in ln]
    run_dir = line.split("upload it with: wandb sync ")[1]
    summary = leet_summary(str(tmp_path / run_dir) if not Path(run_dir).is_absolute() else run_dir)
    assert summary["state"] == "finished"
    assert summary["summary"]["sanity/loss_at_init/status"] == "pass"
    assert summary["config"]["model"]["_target_"] == "trackcheck.models.MLP"


def test_a_failed_runs_notes_hold_the_verdict_and_each_failures_reason(env, tmp_path):
    from trackcheck import gist

    report = tracked_stage(WandbTracker(project="tc-test"), tmp_path / "out", fail=True)
    records = leet_records(report.tracker["run_dir"])
    notes = [r["run"]["notes"] for r in records if r["type"] == "run" and r["run"].get("notes")]
    assert notes, "no run record carries the notes"
    lines = notes[-1].splitlines()
    assert lines[0] == "trackcheck: FAILED (1 fail, 1 pass)"
    assert lines[1] == f"fail overfit_batch: {gist.reason_of(report['overfit_batch'], report)}"
    assert "report.html" in lines[-1]


def test_the_stages_console_lines_land_in_the_runs_logs(env, tmp_path):
    from trackcheck.console import console

    tracker = WandbTracker(project="tc-test")
    tracker.start({}, "sanity-test")
    console.print("[1/2] loss_at_init           pass    0.01s  loss at init 2.30")
    tracker.finish("FINISHED")
    logs = Path(tracker.run.settings.files_dir) / "output.log"
    assert "[1/2] loss_at_init" in logs.read_text()
