"""Gated sweeps end to end: `python -m trackcheck -m ...` with one planted-bug job.

The planted bug: `model.out_bias=null` on diabetes (raw targets, mean about 152) leaves the
MLP's output near 0, so init_bias fails; on digits and breast_cancer the same setting passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.sweeps import assert_jobs_are_children_with_their_verdicts, summary_of

from trackcheck import gate, names, sweep
from trackcheck.redact import REDACTED, redact_args
from trackcheck.trackers._mlflow_store import absolute_uri

FAST = ["checks.run=[loss_at_init,init_bias]", "progress=false"]


def trackcheck_m(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A multirun of the real entry point in ``cwd``, its sweep dir ``cwd/sweep``."""
    # one thread per job: parallel jobs with PyTorch's spinning pools on 2 cores crawl
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "trackcheck", "-m", *args, f"hydra.sweep.dir={cwd / 'sweep'}"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def status_by_data(summary: dict[str, Any]) -> dict[str, str]:
    """``{"data=diabetes": "failed", ...}``: each job's verdict by its data override."""
    return {
        next(o for o in j["overrides"] if o.startswith("data=")): j["status"]
        for j in summary["jobs"]
    }


# --- a 3-job sweep into MLflow, the failing job first -----------------------------------------
Swept = tuple[subprocess.CompletedProcess[str], Path]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Swept:
    """The sweep's process and its working dir (sweep/, mlflow.db)."""
    cwd = tmp_path_factory.mktemp("sweep3")
    p = trackcheck_m(
        "+model=mlp",
        "model.out_bias=null",
        "data=diabetes,digits,breast_cancer",
        f"tracker.tracking_uri=sqlite:///{cwd / 'mlflow.db'}",  # a fresh store
        *FAST,
        cwd=cwd,
    )
    return p, cwd


@pytest.mark.slow
def test_sweep_exits_1_when_a_job_fails(swept):
    p, _ = swept
    assert p.returncode == 1, p.stderr


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_jobs_after_it(swept):
    _, cwd = swept
    assert status_by_data(summary_of(cwd)) == {
        "data=diabetes": "failed",
        "data=digits": "passed",
        "data=breast_cancer": "passed",
    }


@pytest.mark.slow
def test_summary_names_the_failed_checks_and_tracker_runs(swept):
    _, cwd = swept
    jobs = {j["num"]: j for j in summary_of(cwd)["jobs"]}
    assert jobs[0]["failed_checks"] == ["init_bias"] and "target mean" in jobs[0]["message"]
    assert [j["failed_checks"] for j in (jobs[1], jobs[2])] == [[], []]
    assert all(len(j["run_id"]) == 32 for j in jobs.values())  # MLflow run ids


@pytest.mark.slow
def test_summary_table_is_printed(swept):
    p, cwd = swept
    assert "trackcheck sweep" in p.stderr and "init_bias" in p.stderr
    assert "1 failed" in p.stderr and "2 passed" in p.stderr
    assert str(cwd / "sweep" / sweep.REPORT_NAME) in p.stderr.replace("\n", "")


@pytest.mark.slow
def test_jobs_are_child_runs_of_one_parent_run(swept):
    _, cwd = swept
    assert_jobs_are_children_with_their_verdicts(f"sqlite:///{cwd / 'mlflow.db'}", summary_of(cwd))


@pytest.mark.slow
def test_job_runs_are_named_by_model_data_and_overrides(swept):
    """Runs a person tells apart in MLflow's run list: no two jobs share a name."""
    from mlflow import MlflowClient

    _, cwd = swept
    summary = summary_of(cwd)
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    run_names = {client.get_run(j["run_id"]).info.run_name for j in summary["jobs"]}
    common = "model.out_bias=null,checks.run=[loss_at_init,init_bias]"  # progress=false: left out
    expected = {f"sanity-mlp-{d}-{common}" for d in ("diabetes", "digits", "breast_cancer")}
    assert run_names == expected


@pytest.mark.slow
def test_gate_on_the_parent_run_fails_naming_the_run_and_check(swept, capsys):
    _, cwd = swept
    parent = summary_of(cwd)["tracker"]["parent_run_id"]
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    assert gate.main(["mlflow", "--tracking-uri", uri, "--parent-run", parent]) == 1
    err = capsys.readouterr().err
    assert "1 of 3 run(s): sanity-mlp-diabetes-model.out_bias=null," in err
    assert "(failed: init_bias)" in err


@pytest.mark.slow
def test_gate_counts_a_child_run_without_verdict_as_crashed(swept, tmp_path, capsys):
    from mlflow import MlflowClient

    _, cwd = swept
    shutil.copyfile(cwd / "mlflow.db", tmp_path / "mlflow.db")  # leave the sweep's store as is
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(summary_of(cwd)["tracker"]["parent_run_id"]).info
    tags = {"mlflow.parentRunId": parent.run_id}
    crashed = client.create_run(parent.experiment_id, tags=tags, run_name="sanity-mlp-3")
    client.set_terminated(crashed.info.run_id, "FAILED")  # a job killed before its verdict
    assert gate.main(["mlflow", "--tracking-uri", uri, "--parent-run", parent.run_id]) == 1
    assert "ERROR    sanity-mlp-3" in capsys.readouterr().out


@pytest.mark.slow
def test_gate_on_the_experiment_counts_only_runs_with_a_verdict(swept, capsys):
    _, cwd = swept
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    assert gate.main(["mlflow", "--tracking-uri", uri, "--experiment", "trackcheck", "--json"]) == 1
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert sorted(r["status"] for r in runs) == ["failed", "passed", "passed"]  # no sweep parent


@pytest.mark.slow
def test_gate_on_the_sweep_dir_fails_naming_the_job(swept, capsys):
    _, cwd = swept
    assert gate.main(["dir", str(cwd / "sweep")]) == 1
    out = capsys.readouterr().out
    (failed,) = [line for line in out.splitlines() if "FAILED" in line]
    assert "data=diabetes" in failed and "init_bias" in failed


@pytest.mark.slow
def test_gate_passes_on_a_dir_whose_runs_all_passed(swept):
    _, cwd = swept
    assert gate.main(["dir", str(cwd / "sweep" / "1")]) == 0


# --- fail-fast and parallel jobs --------------------------------------------------------------
@pytest.mark.slow
def test_fail_fast_skips_the_jobs_after_the_first_failure(tmp_path):
    p = trackcheck_m(
        "+model=mlp", "model.out_bias=null", "data=diabetes,digits", "tracker=none",
        "sweep.fail_fast=true", *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 1, p.stderr
    summary = summary_of(tmp_path)
    assert status_by_data(summary) == {"data=diabetes": "failed", "data=digits": "skipped"}
    assert not (tmp_path / "sweep" / "1" / "report.json").exists()  # job 1 never ran its stage


@pytest.mark.slow
def test_four_parallel_jobs_share_one_fresh_sqlite_store(tmp_path):
    """hydra-joblib-launcher: 4 processes at once; none lost, none in the Default experiment."""
    from mlflow import MlflowClient

    db = tmp_path / "mlflow.db"
    p = trackcheck_m(
        "+model=mlp", "checks.run=[loss_at_init]", "progress=false",
        "optim.lr=1e-3,2e-3,3e-3,4e-3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
        f"tracker.tracking_uri=sqlite:///{db}", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    summary = summary_of(tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("trackcheck")
    assert summary["tracker"]["experiment_id"] == exp.experiment_id
    parent = summary["tracker"]["parent_run_id"]
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted(r.info.run_id for r in children) == sorted(j["run_id"] for j in summary["jobs"])
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert client.search_runs(["0"]) == []  # nothing landed in the Default experiment


# --- the pieces, without a sweep --------------------------------------------------------------
def test_run_name_is_model_data_and_the_overrides_that_change_what_is_checked():
    overrides = [
        *["+model=resnet", "data=digits", "seed=3", "optim.lr=0.01"],
        *["tracker.tracking_uri=sqlite:///x.db", "hydra.job.chdir=true", "progress=false"],
    ]
    name = names.run_name("resnet", "digits", overrides)
    assert name == "sanity-resnet-digits-seed=3,optim.lr=0.01"
    assert names.run_name("resnet", "digits") == "sanity-resnet-digits"


def test_run_name_shows_no_secret_from_the_command_line():
    name = names.run_name("mlp", None, redact_args(["+model.api_key=sk-0123456789"]))
    assert "sk-0123456789" not in name and name == f"sanity-mlp-model.api_key={REDACTED}"


def test_failed_job_returns_the_configured_worst_value():
    failed = sweep.JobRecord(num=0, overrides=[], status=sweep.FAILED)
    assert sweep.job_value(failed, float("inf"), train_result=0.1) == float("inf")
    assert sweep.job_value(failed, float("-inf")) == float("-inf")


def test_passed_job_returns_the_training_result_else_passed():
    ok = sweep.JobRecord(num=0, overrides=[], status=sweep.PASSED)
    assert sweep.job_value(ok, float("inf"), train_result=0.25) == 0.25
    assert sweep.job_value(ok, float("inf")) == "passed"


def test_first_failure_stops_a_fail_fast_sweep(tmp_path):
    sweep.save_job(tmp_path, sweep.JobRecord(num=0, overrides=[], status=sweep.PASSED), True)
    assert sweep.stop_requested(tmp_path) is None
    sweep.save_job(tmp_path, sweep.JobRecord(num=2, overrides=[], status=sweep.FAILED), True)
    sweep.save_job(tmp_path, sweep.JobRecord(num=3, overrides=[], status=sweep.ERROR), True)
    assert sweep.stop_requested(tmp_path) == 2
    assert [r.num for r in sweep.read_jobs(tmp_path)] == [0, 2, 3]


def test_without_fail_fast_a_failure_stops_nothing(tmp_path):
    sweep.save_job(tmp_path, sweep.JobRecord(num=0, overrides=[], status=sweep.FAILED))
    assert sweep.stop_requested(tmp_path) is None


CTX = sweep.SweepContext(
    sweep_id="s-1",
    sweep_dir="/tmp/s",
    mlflow={
        "configured_uri": "sqlite:///mlflow.db",
        "tracking_uri": "sqlite:////work/mlflow.db",
        "experiment_id": "7",
        "parent_run_id": "p" * 32,
    },
)
MLFLOW = {"_target_": "trackcheck.trackers.mlflow.MLflowTracker", "tags": {"team": "a"}}


def test_mlflow_job_gets_the_parent_run_and_experiment():
    node = {**MLFLOW, "tracking_uri": "sqlite:///mlflow.db"}
    assert sweep.tracker_args(node, CTX) == {
        "tracking_uri": "sqlite:////work/mlflow.db",
        "experiment_id": "7",
        "parent_run_id": "p" * 32,
        "tags": {"team": "a", "trackcheck.sweep_id": "s-1"},
    }


def test_mlflow_job_logging_elsewhere_is_left_alone():
    assert sweep.tracker_args({**MLFLOW, "tracking_uri": "http://other:5000"}, CTX) == {}


def test_wandb_job_is_grouped_by_the_sweep_id_unless_the_config_says():
    node = {"_target_": "trackcheck.trackers.wandb.WandbTracker", "group": None, "job_type": None}
    assert sweep.tracker_args(node, CTX) == {"group": "s-1", "job_type": "sanity"}
    assert sweep.tracker_args({**node, "group": "mine", "job_type": "sanity"}, CTX) == {}


def test_relative_sqlite_uri_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_uri("http://h:5000") == "http://h:5000"
