"""The Hydra entry point, end to end: exit codes, messages, report on disk, MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.cli import trackcheck
from hydra import compose, initialize_config_module

from trackcheck.cli import register_configs

FAST = ["checks.run=[loss_at_init,init_bias]", "progress=false"]


def reports(cwd: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cwd.glob("outputs/*/*/report.json"))]


@pytest.mark.parametrize(
    "model,data",
    [("resnet", None), ("mlp", None), ("mlp", "diabetes"), ("gpt", None), ("mlp", "synthetic")],
)
def test_every_shipped_pair_composes_and_validates(model, data):
    register_configs()
    overrides = [f"+model={model}"] + ([f"data={data}"] if data else [])
    with initialize_config_module("trackcheck.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert cfg.model._target_.startswith("trackcheck.models.")
    assert cfg.data._target_.startswith("trackcheck.data.")
    assert cfg.checks.run == ["all"] and cfg.optim.lr == 3e-3


def test_no_model_lists_the_models_and_exits_2(tmp_path):
    p = trackcheck(cwd=tmp_path)
    assert p.returncode == 2
    assert "+model=resnet" in p.stderr and "gpt, mlp, resnet" in p.stderr


@pytest.mark.slow
def test_passing_stage_exits_0_and_writes_the_report(tmp_path):
    p = trackcheck("+model=mlp", "tracker=none", *FAST, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (doc,) = reports(tmp_path)
    assert doc["status"] == "passed"
    assert [c["name"] for c in doc["checks"]] == ["loss_at_init", "init_bias"]
    assert doc["config"]["model"]["_target_"] == "trackcheck.models.MLP"


@pytest.mark.slow
def test_failing_gate_exits_1(tmp_path):
    # planted bug: raw regression targets (mean 152) with the final bias left at PyTorch's init
    p = trackcheck(
        "+model=mlp", "data=diabetes", "model.out_bias=null", "tracker=none", *FAST, cwd=tmp_path
    )
    assert p.returncode == 1
    (doc,) = reports(tmp_path)
    assert doc["status"] == "failed" and doc["gated_on"] == ["init_bias"]


@pytest.mark.slow
def test_typo_in_a_check_param_fails_at_startup_naming_the_key(tmp_path):
    p = trackcheck("+model=mlp", "tracker=none", "checks.overfit_batch.max_stepz=5", cwd=tmp_path)
    assert p.returncode == 2  # a broken config, not a failed gate
    assert "Key 'max_stepz' not in 'OverfitBatchParams'" in p.stderr
    assert not reports(tmp_path)


@pytest.mark.slow
def test_bad_target_is_a_one_line_error_exit_2(tmp_path):
    p = trackcheck("+model=mlp", "tracker=none", "model._target_=my_pkg.Missing", cwd=tmp_path)
    assert p.returncode == 2
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("trackcheck: error:")]
    assert "could not build model" in line and "my_pkg.Missing" in line


@pytest.mark.slow
def test_default_tracker_logs_to_local_mlflow_store(tmp_path):
    from mlflow import MlflowClient

    p = trackcheck("+model=mlp", "data=diabetes", "model.out_bias=null", *FAST, cwd=tmp_path)
    assert p.returncode == 1
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("trackcheck").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["trackcheck.status"] == "failed"
    assert run.data.tags["trackcheck.check.init_bias"] == "fail"
    assert run.data.params["model.out_bias"] == "None"
    assert run.data.tags["mlflow.note.content"].startswith("**trackcheck: FAILED**")


@pytest.mark.slow
def test_wheel_install_finds_its_configs_outside_the_source_tree(tmp_path):
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(root),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("trackcheck-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.run(
        [sys.executable, "-m", "trackcheck", "+model=mlp", "tracker=none", *FAST],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import trackcheck; print(trackcheck.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.startswith(str(site))


USER_MODULE = """
import torch
from torch import nn
from torch.utils.data import TensorDataset


class TwoLayer(nn.Module):
    def __init__(self, n_in: int, n_out: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.net(x)


def blobs(split: str, n: int = 256):
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > x[:, 1]).long() + (x[:, 2] > 0).long())
"""

USER_MODEL = """
defaults:
  - /data@_global_.data: mydata
_target_: my_pkg.TwoLayer
n_in: 6
n_out: ${data.num_outputs}
bigger: {hidden: 64}
"""

USER_DATA = """
_target_: trackcheck.data.from_datasets
train: {_target_: my_pkg.blobs, split: train}
test: {_target_: my_pkg.blobs, split: test}
task: multiclass
num_outputs: 3
"""


@pytest.mark.slow
def test_users_own_model_and_data_through_config_dir(tmp_path):
    (tmp_path / "my_pkg.py").write_text(USER_MODULE)
    (tmp_path / "my_configs" / "model").mkdir(parents=True)
    (tmp_path / "my_configs" / "data").mkdir()
    (tmp_path / "my_configs" / "model" / "mynet.yaml").write_text(USER_MODEL)
    (tmp_path / "my_configs" / "data" / "mydata.yaml").write_text(USER_DATA)
    p = trackcheck(
        "--config-dir",
        "my_configs",
        "+model=mynet",
        "tracker=none",
        "checks.run=[loss_at_init,overfit_batch]",
        "progress=false",
        cwd=tmp_path,
        PYTHONPATH=str(tmp_path),
    )
    assert p.returncode == 0, p.stderr
    (doc,) = reports(tmp_path)
    assert {c["name"]: c["status"] for c in doc["checks"]} == {
        "loss_at_init": "pass",
        "overfit_batch": "pass",
    }
