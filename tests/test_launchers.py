"""Gated sweeps through the cluster launchers, for real, and each job's share of the cores.

submitit: its local executor (``hydra/launcher=submitit_local``) runs each job in a process
of its own through submitit's pickled-job path, the one SLURM runs; the jobs log to the
default sqlite store. Ray: a cluster started here on 127.0.0.1 (``ray start --head``, in a
working dir of its own, as a cluster's workers are), the jobs logging to a real ``mlflow
server``. The planted bug, as in test_sweep.py: ``model.out_bias=null`` on diabetes (raw
targets, mean about 152) leaves the MLP's output near 0, so init_bias fails; digits and
breast_cancer pass with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.sweeps import assert_jobs_are_children_with_their_verdicts, summary_of
from omegaconf import OmegaConf

from trackcheck import cluster, gate, sweep, threads
from trackcheck.core import ConfigError
from trackcheck.trackers.base import TrackerError

CHECKS = ["checks.run=[loss_at_init,init_bias]", "progress=false"]
PLANTED = ["+model=mlp", "model.out_bias=null"]
FAILED_VALUE = 1e9  # sweep.failed_value: what a failed job returns to the sweeper
SUBMITIT = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
START_S = 120  # `ray start` and `mlflow server` take 5-15 s on 2 idle cores; more when busy

# The real CLI, with the sweeper Hydra makes wrapped to write what every job RETURNED to the
# main process (what Optuna & co read as the objective) to $RETURNS. (Hydra re-imports its
# plugin modules when it scans them, so the sweeper is wrapped where Hydra makes it.)
RECORDER = """
import json, os
from hydra.core.plugins import Plugins
make = Plugins.instantiate_sweeper
def instantiate(self, **kwargs):
    sweeper = make(self, **kwargs)
    sweep = sweeper.sweep
    def recording(arguments):
        batches = sweep(arguments)
        jobs = [r for batch in batches for r in batch]
        rows = [{"overrides": list(r.overrides), "value": r._return_value} for r in jobs]
        with open(os.environ["RETURNS"], "w") as f:
            json.dump(rows, f, default=repr)
        return batches
    sweeper.sweep = recording
    return sweeper
Plugins.instantiate_sweeper = instantiate
from trackcheck.cli import main
main()
"""


def clean_env(**extra: str) -> dict[str, str]:
    """No OMP_NUM_THREADS (trackcheck's `threads: auto` must do it) nor a tracking URI."""
    drop = ("OMP_NUM_THREADS", "MLFLOW_TRACKING_URI")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def sweep_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m trackcheck -m ARGS`` in ``cwd``, its sweep dir ``cwd/sweep``."""
    cmd = [sys.executable, "-c", RECORDER, "-m", *args, f"hydra.sweep.dir={cwd / 'sweep'}"]
    environ = clean_env(PYTHONUNBUFFERED="1", RETURNS=str(cwd / "returns.json"), **env)
    return subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600)


def by_data(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """``{"data=diabetes": row[key], ...}`` for summary jobs or recorded returns."""
    return {next(o for o in r["overrides"] if o.startswith("data=")): r[key] for r in rows}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- services: a Ray cluster and an MLflow server, as a cluster has them ------------------------
def _wait(ready: Any, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_S
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.skip(f"{what} cannot start here: {log.read_text()[-1500:]}")
        time.sleep(0.3)


def _serving(uri: str) -> bool:
    try:
        urllib.request.urlopen(f"{uri}/health", timeout=1).close()
        return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM to the process we started (`ray start --block` then stops its own
    processes), then SIGKILL to its process group for whatever is left."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own group: start_new_session
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A Ray head on 127.0.0.1 (2 CPUs, started in its own dir) and an MLflow server."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="pip install hydra-ray-launcher")
    d = tmp_path_factory.mktemp("services")
    (d / "node").mkdir()
    ray_port, mlflow_port = free_port(), free_port()
    ray_cmd = [
        *(sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block"),
        *(f"--port={ray_port}", "--node-ip-address=127.0.0.1", "--num-cpus=2"),
        *("--include-dashboard=false", "--disable-usage-stats"),
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
    ]
    mlflow_cmd = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
        *("--port", str(mlflow_port), "--workers", "1"),
        *("--backend-store-uri", f"sqlite:///{d / 'server.db'}"),
        *("--artifacts-destination", str(d / "served")),
    ]
    env = clean_env(RAY_USAGE_STATS_ENABLED="0")
    logs = {"ray": d / "ray.log", "mlflow": d / "mlflow.log"}
    procs = {
        name: subprocess.Popen(
            cmd,
            cwd=d / "node" if name == "ray" else d,
            env=env,
            stdout=logs[name].open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group each, stopped as a whole
        )
        for name, cmd in (("ray", ray_cmd), ("mlflow", mlflow_cmd))
    }
    uri = f"http://127.0.0.1:{mlflow_port}"
    try:
        _wait(lambda: "Ray runtime started" in logs["ray"].read_text(), procs["ray"], logs["ray"],
              "Ray")  # fmt: skip
        _wait(lambda: _serving(uri), procs["mlflow"], logs["mlflow"], "mlflow server")
        yield {"ray": f"127.0.0.1:{ray_port}", "mlflow": uri, "node": d / "node"}
    finally:
        for name, proc in procs.items():
            _stop(proc, grace_s=30 if name == "ray" else 10)


def ray_args(services: dict[str, Any]) -> list[str]:
    return ["hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={services['ray']}"]


# --- one 3-job sweep per launcher, the failing job first ----------------------------------------
@pytest.fixture(scope="module", params=["submitit", "ray"])
def swept(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(the launcher, the sweep's process, its dir, the MLflow store it logged to)."""
    cwd = tmp_path_factory.mktemp(f"swept-{request.param}")
    if request.param == "submitit":
        launcher, store = SUBMITIT, f"sqlite:///{cwd / 'mlflow.db'}"  # the default store
    else:
        services = request.getfixturevalue("services")
        store = services["mlflow"]
        launcher = [*ray_args(services), f"tracker.tracking_uri={store}"]
    p = sweep_cli(
        *PLANTED, "data=diabetes,digits,breast_cancer", *CHECKS, *launcher,
        f"sweep.failed_value={FAILED_VALUE}", cwd=cwd,
    )  # fmt: skip
    return request.param, p, cwd, store


@pytest.mark.slow
def test_sweep_exits_1_when_one_job_fails(swept):
    _, p, _, _ = swept
    assert p.returncode == 1, p.stderr[-3000:]


@pytest.mark.slow
def test_the_other_jobs_finish_and_the_summary_names_the_failed_check(swept):
    _, p, cwd, _ = swept
    summary = summary_of(cwd)
    assert by_data(summary["jobs"], "status") == {
        "data=diabetes": "failed",
        "data=digits": "passed",
        "data=breast_cancer": "passed",
    }
    assert by_data(summary["jobs"], "failed_checks")["data=diabetes"] == ["init_bias"]
    assert "1 failed" in p.stderr and "2 passed" in p.stderr  # the printed table's counts


@pytest.mark.slow
def test_jobs_ran_through_the_launcher_in_other_processes(swept):
    launcher, p, cwd, _ = swept
    if launcher == "submitit":  # submitit's pickled jobs and their logs
        assert len(list((cwd / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 3
    else:  # Ray prefixes its workers' lines with the remote function and its pid
        assert "(_run_job pid=" in p.stderr


@pytest.mark.slow
def test_failed_job_returns_the_failed_value_to_the_sweeper(swept):
    _, _, cwd, _ = swept
    returns = by_data(json.loads((cwd / "returns.json").read_text()), "value")
    assert returns == {
        "data=diabetes": FAILED_VALUE,
        "data=digits": "passed",
        "data=breast_cancer": "passed",
    }


@pytest.mark.slow
def test_jobs_are_child_runs_of_one_parent_run_with_their_verdicts(swept):
    _, _, cwd, store = swept
    assert_jobs_are_children_with_their_verdicts(store, summary_of(cwd))


@pytest.mark.slow
def test_gate_reads_the_verdicts_back_from_mlflow_and_the_sweep_dir(swept, capsys):
    _, _, cwd, store = swept
    parent = summary_of(cwd)["tracker"]["parent_run_id"]
    assert gate.main(["mlflow", "--tracking-uri", store, "--parent-run", parent]) == 1
    assert "1 of 3 run(s)" in capsys.readouterr().err
    assert gate.main(["dir", str(cwd / "sweep")]) == 1
    (failed,) = [ln for ln in capsys.readouterr().out.splitlines() if "FAILED" in ln]
    assert "data=diabetes" in failed and "init_bias" in failed


@pytest.mark.slow
def test_each_job_got_its_share_of_the_cores(swept):
    """submitit_local starts the batch's 3 jobs at once; Ray reserves 1 CPU per job."""
    launcher, _, cwd, _ = swept
    share = max(1, threads.cores() // 3) if launcher == "submitit" else 1
    envs = [json.loads(p.read_text())["environment"] for p in (cwd / "sweep").glob("*/report.json")]
    assert len(envs) == 3
    assert {e["torch_threads"] for e in envs} == {share}
    word = "submitit_local" if launcher == "submitit" else "ray"
    assert all(word in e["torch_threads_from"] for e in envs)


# --- fail-fast, one job at a time ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["submitit", "ray"])
def test_fail_fast_skips_the_jobs_after_the_first_failure(launcher, request, tmp_path):
    args = SUBMITIT if launcher == "submitit" else ray_args(request.getfixturevalue("services"))
    p = sweep_cli(
        *PLANTED, "data=diabetes,digits", *CHECKS, *args, "tracker=none",
        "sweep.fail_fast=true", "hydra.sweeper.max_batch_size=1",
        f"sweep.failed_value={FAILED_VALUE}", cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 1, p.stderr[-3000:]
    statuses = by_data(summary_of(tmp_path)["jobs"], "status")
    assert statuses == {"data=diabetes": "failed", "data=digits": "skipped"}
    assert not (tmp_path / "sweep" / "1" / "report.json").exists()  # job 1 never ran its stage
    returns = by_data(json.loads((tmp_path / "returns.json").read_text()), "value")
    assert returns == {"data=diabetes": FAILED_VALUE, "data=digits": FAILED_VALUE}


# --- what a cluster's job needs, said when it is missing ----------------------------------------
@pytest.mark.slow
def test_ray_job_without_the_drivers_tracking_env_fails_saying_so(services, tmp_path):
    """MLFLOW_TRACKING_URI set for the driver only: a Ray worker resolves the default store
    in its own environment, and would log outside the sweep's parent run."""
    p = sweep_cli(
        "+model=mlp", "data=digits", *CHECKS, *ray_args(services), cwd=tmp_path,
        MLFLOW_TRACKING_URI=services["mlflow"],
    )  # fmt: skip
    assert p.returncode == 1, p.stderr[-3000:]
    (job,) = summary_of(tmp_path)["jobs"]
    assert job["status"] == "error"
    assert "a Ray worker has the environment" in job["message"]
    assert f"tracker.tracking_uri={services['mlflow']}" in job["message"]
    assert not (services["node"] / "mlflow.db").exists()  # no stray store on the worker


def job_config(tmp_path: Path, **hydra: Any) -> Any:
    """The HydraConfig fields the cluster checks read, for a job of a sweep in tmp_path."""
    node = {
        "callbacks": {"trackcheck_sweep": {"_target_": cluster.SWEEP_CALLBACK}},
        "sweep": {"dir": str(tmp_path / "sweep")},
        "job": {"num": 0},
        "runtime": {"cwd": str(tmp_path), "output_dir": str(tmp_path / "sweep" / "0")},
        "overrides": {"task": ["data=digits"]},
    }
    return OmegaConf.merge(node, hydra)


def test_job_that_cannot_see_the_sweep_dir_is_refused_naming_it(tmp_path):
    hc = job_config(tmp_path)
    with pytest.raises(cluster.SweepDirNotVisible, match="cannot see its sweep dir .*shared"):
        cluster.require_sweep_dir(hc, tmp_path / "sweep")
    sweep.write_context(sweep.SweepContext("s", str(tmp_path / "sweep")))
    cluster.require_sweep_dir(hc, tmp_path / "sweep")  # visible now: no error


def test_sweep_dir_is_not_required_without_trackchecks_sweep_callback(tmp_path):
    cluster.require_sweep_dir(job_config(tmp_path, callbacks=None), tmp_path / "sweep")


def test_relative_sweep_dir_in_another_working_dir_is_an_error(tmp_path):
    """A Ray worker runs where `ray start` ran: Hydra put its outputs under that dir."""
    hc = job_config(tmp_path, sweep={"dir": "sweep"}, runtime={"output_dir": "/elsewhere/0"})
    with pytest.raises(ConfigError, match="relative.*give an absolute hydra.sweep.dir"):
        cluster.check_output_dir(hc, tmp_path / "sweep")
    cluster.check_output_dir(job_config(tmp_path), tmp_path / "sweep")  # inside: fine


def test_sqlite_store_missing_on_the_job_machine_is_an_error(tmp_path):
    args = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "parent_run_id": "p" * 32}
    with pytest.raises(TrackerError, match="does not exist.*MLflow server"):
        cluster.check_store(args)
    (tmp_path / "mlflow.db").touch()
    cluster.check_store(args)


def test_file_store_without_the_parent_run_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative store resolves in the job's working dir
    args = {"tracking_uri": "mlruns", "experiment_id": "1", "parent_run_id": "p" * 32}
    with pytest.raises(TrackerError, match="a relative path: resolved in this dir"):
        cluster.check_store(args)
    (tmp_path / "mlruns" / "1" / ("p" * 32)).mkdir(parents=True)
    cluster.check_store(args)


# --- the thread count: pure functions -----------------------------------------------------------
JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
LOCAL = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}
SLURM = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
RAY = {"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", "ray": {}}
BASIC = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}


def n(setting: Any, launcher: dict[str, Any] | None, cores: int, batch: int | None = None) -> Any:
    return threads.choose(setting, launcher, cores, batch).threads


def test_joblib_jobs_share_the_cores_never_below_one():
    assert n("auto", {**JOBLIB, "n_jobs": 4}, cores=2) == 1
    assert n("auto", {**JOBLIB, "n_jobs": 2}, cores=8) == 4
    assert n("auto", {**JOBLIB, "n_jobs": -1}, cores=4) == 1  # joblib: -1 = one per core
    assert n("auto", {**JOBLIB, "n_jobs": 4}, cores=8, batch=2) == 4  # only 2 jobs to run


def test_explicit_threads_win_and_zero_keeps_torchs_default():
    assert n(3, {**JOBLIB, "n_jobs": 4}, cores=2) == 3
    assert n("3", None, cores=2) == 3  # from the command line: threads=3
    assert n(0, {**JOBLIB, "n_jobs": 4}, cores=2) is None


@pytest.mark.parametrize("bad", ["abc", -1, "1.5"])
def test_bad_threads_setting_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="expected auto"):
        threads.parse_setting(bad)


def test_submitit_local_runs_the_whole_batch_at_once():
    assert n("auto", LOCAL, cores=2, batch=3) == 1
    assert n("auto", {**LOCAL, "tasks_per_node": 2}, cores=8, batch=2) == 2
    assert n("auto", {**LOCAL, "cpus_per_task": 2}, cores=8, batch=1) == 2  # caps the share
    assert n("auto", LOCAL, cores=8) == 1  # batch unknown: the safe side


def test_slurm_and_ray_give_a_job_the_cpus_reserved_for_it():
    assert n("auto", {**SLURM, "cpus_per_task": 8}, cores=8) == 8
    assert n("auto", {**SLURM, "cpus_per_task": 16}, cores=8) == 8  # only 8 to run on
    assert n("auto", SLURM, cores=6) == 6  # SLURM's allocation is the affinity
    assert n("auto", RAY, cores=8) == 1  # Ray reserves 1 CPU per task by default
    assert n("auto", {**RAY, "ray": {"remote": {"num_cpus": 4}}}, cores=8) == 4


def test_one_job_at_a_time_keeps_torchs_default():
    assert n("auto", BASIC, cores=8) is None
    assert n("auto", None, cores=8) is None  # a single run


def test_batch_size_is_read_from_the_sweeps_multirun_yaml(tmp_path):
    sweeper = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}
    task = ["data=a,b,c", "optim.lr=1,2"]
    cfg = {"hydra": {"sweeper": {**sweeper, "max_batch_size": None}, "overrides": {"task": task}}}
    OmegaConf.save(cfg, tmp_path / "multirun.yaml")
    assert threads.batch_size(tmp_path) == 6
    cfg["hydra"]["sweeper"]["max_batch_size"] = 4
    OmegaConf.save(cfg, tmp_path / "multirun.yaml")
    assert threads.batch_size(tmp_path) == 4
    assert threads.batch_size(tmp_path / "nowhere") is None
