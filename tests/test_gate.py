"""The gate command on real records: report.json folders, an MLflow store, offline W&B runs.

(The gate on a real sweep's dir and MLflow parent run is in test_sweep.py.)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tracked_stage

from trackcheck import gate
from trackcheck.trackers._wandb_read import run_verdict


# --- a folder of report.json files ------------------------------------------------------------
@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real stages: ``ok/`` passed, ``bad/`` failed on overfit_batch."""
    root = tmp_path_factory.mktemp("reports")
    tracked_stage(None, root / "ok")
    tracked_stage(None, root / "bad", fail=True)
    return root


def test_dir_gate_fails_naming_the_run_and_its_failed_check(reports, capsys):
    assert gate.main(["dir", str(reports)]) == gate.EXIT_FAILED
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if "FAILED" in ln]
    assert line.split()[1] == "bad" and "failed: overfit_batch" in line


def test_dir_gate_gives_each_failed_checks_message(reports, capsys):
    (bad,) = json.loads((reports / "bad" / "report.json").read_text())["checks"][1:]
    assert bad["name"] == "overfit_batch"
    message = bad["message"]
    gate.main(["dir", str(reports)])
    assert f"overfit_batch: {message}" in capsys.readouterr().out


def test_a_warning_that_failed_a_strict_gate_is_called_a_warning(reports, tmp_path, capsys):
    """gate.fail_on_warn (gate=strict) fails a run on a warning: the gate says "warned"."""
    d = json.loads((reports / "bad" / "report.json").read_text())
    assert d["checks"][1]["name"] == "overfit_batch"
    d["checks"][1]["status"] = "warn"  # the same record, as if overfit_batch had warned
    (tmp_path / "strict").mkdir()
    (tmp_path / "strict" / "report.json").write_text(json.dumps(d))
    assert gate.main(["dir", str(tmp_path)]) == gate.EXIT_FAILED
    out, err = capsys.readouterr()
    (line,) = [ln for ln in out.splitlines() if "FAILED" in ln]
    assert "warned: overfit_batch" in line and "failed:" not in line
    assert "gate.fail_on_warn" in line and "(warned: overfit_batch)" in err


def test_dir_gate_passes_when_every_report_passed(reports):
    assert gate.main(["dir", str(reports / "ok")]) == gate.EXIT_PASSED


def test_a_hydra_job_without_report_counts_as_crashed(reports, tmp_path):
    shutil.copytree(reports / "ok", tmp_path / "0")
    job = tmp_path / "1" / ".hydra"
    job.mkdir(parents=True)
    (job / "overrides.yaml").write_text("- optim.lr=10\n")
    verdicts = {v.run: v.status for v in gate.read_dir(tmp_path)}
    assert verdicts == {"0": "passed", "1 optim.lr=10": "error"}


def test_tracker_copies_of_a_report_are_not_counted_twice(reports, tmp_path):
    shutil.copytree(reports / "ok", tmp_path / "job")
    copy = tmp_path / "mlruns" / "1" / "abc" / "artifacts" / "sanity"
    copy.mkdir(parents=True)
    shutil.copyfile(reports / "ok" / "report.json", copy / "report.json")
    assert [v.run for v in gate.read_dir(tmp_path)] == ["job"]


def test_no_report_at_all_exits_2(tmp_path):
    assert gate.main(["dir", str(tmp_path)]) == gate.EXIT_NOTHING
    assert gate.main(["dir", str(tmp_path / "missing")]) == gate.EXIT_NOTHING


def test_json_output_lists_every_run(reports, capsys):
    gate.main(["dir", str(reports), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False
    assert {r["run"]: r["failed_checks"] for r in doc["runs"]} == {
        "bad": ["overfit_batch"],
        "ok": [],
    }


# --- W&B: offline run folders, read back with `wandb leet inspect` ----------------------------
def offline_wandb(mp: pytest.MonkeyPatch, root: Path) -> None:
    """W&B's folders under ``root``, offline, no API key (as in test_trackers_wandb)."""
    for var, sub in [("WANDB_DIR", ""), ("WANDB_DATA_DIR", "data"),
                     ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config")]:  # fmt: skip
        (root / sub).mkdir(parents=True, exist_ok=True)
        mp.setenv(var, str(root / sub))
    mp.setenv("WANDB_MODE", "offline")
    mp.delenv("WANDB_API_KEY", raising=False)
    mp.setenv("NETRC", str(root / "no-netrc"))


@pytest.fixture(scope="module")
def wandb_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two offline runs: group ``good`` passed, group ``bad`` failed on overfit_batch."""
    wandb = pytest.importorskip("wandb")
    from trackcheck.trackers.wandb import WandbTracker

    root = tmp_path_factory.mktemp("wandb-gate")
    with pytest.MonkeyPatch.context() as mp:
        offline_wandb(mp, root / "wb")
        tracked_stage(WandbTracker(project="p", group="good"), root / "ok")
        tracked_stage(WandbTracker(project="p", group="bad"), root / "bad", fail=True)
        yield root / "wb"
        wandb.teardown()


def test_wandb_group_with_a_failed_run_fails_the_gate(wandb_runs, capsys):
    assert gate.main(["wandb", "--dir", str(wandb_runs), "--group", "bad"]) == 1
    out = capsys.readouterr().out
    assert "1 run(s)" in out and "failed: overfit_batch" in out
    bad = json.loads((wandb_runs.parent / "bad" / "report.json").read_text())
    message = next(c["message"] for c in bad["checks"] if c["name"] == "overfit_batch")
    assert f"overfit_batch: {message}" in out  # why, not only that it failed


def test_wandb_group_filter_keeps_other_groups_out(wandb_runs):
    assert gate.main(["wandb", "--dir", str(wandb_runs), "--group", "good"]) == 0


# --- how a W&B run's verdict is read ----------------------------------------------------------
def test_wandb_failure_tags_name_the_checks():
    v = run_verdict("r", "id", ["sanity:failed", "sanity:fail:init_bias"], {}, "failed")
    assert (v.status, v.failed_checks) == ("failed", ["init_bias"])


def test_wandb_summary_names_checks_whose_tags_did_not_fit():
    summary = {"sanity/passed": False, "sanity/a_long_check/status": "error",
               "sanity/ok/status": "pass"}  # fmt: skip
    v = run_verdict("r", "id", ["sanity:failed"], summary, "failed")
    assert v.failed_checks == ["a_long_check"]


def test_wandb_warning_that_failed_the_gate_is_listed_as_warned_with_its_message():
    summary = {
        "sanity/passed": False,
        "sanity/failed_checks": "full_eval",
        "sanity/full_eval/status": "warn",
        "sanity/full_eval/message": "n = 40 too few",
    }
    v = run_verdict("r", "id", ["sanity:failed", "sanity:fail:full_eval"], summary, "failed")
    assert (v.failed_checks, v.warned_checks) == ([], ["full_eval"])
    assert v.detail == "full_eval: n = 40 too few"


def test_wandb_run_without_verdict_is_running_or_crashed():
    assert run_verdict("r", "id", [], {}, "running").status == "running"
    assert run_verdict("r", "id", [], {}, "failed").status == "error"
