"""TrackcheckCallback in a user's own Hydra app: the stage runs at job start and a failure
stops the job before the user's code runs. The app, its model and its config are the user's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from trackcheck.callbacks import SanityCheckFailed, TrackcheckCallback

APP = """
from pathlib import Path

import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    Path("trained.txt").write_text(f"trained with lr={cfg.optim.lr}")


if __name__ == "__main__":
    main()
"""

MODEL = '''
import torch


class TinyRegressor(torch.nn.Module):
    """A user's model: one linear layer whose output bias starts at ``bias``."""

    def __init__(self, n_in: int, bias: float = 0.0):
        super().__init__()
        self.lin = torch.nn.Linear(n_in, 1)
        torch.nn.init.constant_(self.lin.bias, bias)

    def forward(self, x):
        return self.lin(x).squeeze(-1)  # [B]
'''

# diabetes targets have mean about 152: bias 0.0 is the planted bug init_bias catches
CONFIG = """
features: 10
net:
  _target_: my_model.TinyRegressor
  n_in: ${features}
  bias: 0.0
sanity_data:
  _target_: trackcheck.data.diabetes
optim:
  _target_: torch.optim.Adam
  lr: 0.01
hydra:
  callbacks:
    trackcheck:
      _target_: trackcheck.callbacks.TrackcheckCallback
      model: net
      data: sanity_data
      checks: [loss_at_init, init_bias]
      progress: false
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "conf").mkdir()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "my_model.py").write_text(MODEL)
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG)
    return tmp_path


@pytest.mark.slow
def test_failed_stage_stops_the_users_job_before_training(app):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, "app.py"], cwd=app, env=env, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert p.returncode == 1, p.stderr
    assert "gate failed on init_bias" in p.stderr
    assert not (app / "trained.txt").exists()
    (report,) = app.glob("outputs/*/*/trackcheck/report.json")
    assert json.loads(report.read_text())["gated_on"] == ["init_bias"]


def job_config(app: Path, *overrides: str) -> DictConfig:
    """The job's config as Hydra hands it to on_job_start (with its ``hydra`` node)."""
    cfg = OmegaConf.load(app / "conf" / "config.yaml")
    hydra = {"runtime": {"output_dir": str(app / "out")}, "job": {"name": "app"}}
    cfg = OmegaConf.merge(cfg, {"hydra": hydra}, OmegaConf.from_dotlist(list(overrides)))
    assert isinstance(cfg, DictConfig)
    return cfg


def callback(cfg: DictConfig) -> TrackcheckCallback:
    params = OmegaConf.to_container(cfg.hydra.callbacks.trackcheck)
    assert isinstance(params, dict)
    params.pop("_target_")
    return TrackcheckCallback(**params)


def test_passing_stage_lets_the_job_start_and_writes_its_report(app, monkeypatch):
    monkeypatch.syspath_prepend(str(app))
    cfg = job_config(app, "net.bias=152.0")
    callback(cfg).on_job_start(config=cfg, task_function=lambda c: None)
    report = json.loads((app / "out" / "trackcheck" / "report.json").read_text())
    assert report["status"] == "passed"


def test_stage_config_reads_the_users_nodes_resolved(app):
    cfg = job_config(app, "features=7")
    stage = callback(cfg).stage_config(cfg)
    assert stage.model == {"_target_": "my_model.TinyRegressor", "n_in": 7, "bias": 0.0}
    assert stage.optim == {"_target_": "torch.optim.Adam", "lr": 0.01, "_partial_": True}
    assert stage.checks.run == ["loss_at_init", "init_bias"] and stage.tracker is None


def test_missing_model_node_stops_the_job_with_exit_2_naming_the_key(app, capsys):
    cfg = job_config(app)
    cb = TrackcheckCallback(model="model", data="sanity_data")
    with pytest.raises(SanityCheckFailed) as e:
        cb.on_job_start(config=cfg, task_function=lambda c: None)
    assert e.value.code == 2 and "no 'model' node" in capsys.readouterr().err


def test_a_config_error_in_the_callback_params_stops_the_job_with_exit_2(app, capsys):
    cfg = job_config(app)
    cb = TrackcheckCallback(model="net", data="sanity_data", params={"init_bias": {"nope": 1}})
    with pytest.raises(SanityCheckFailed) as e:
        cb.on_job_start(config=cfg, task_function=lambda c: None)
    assert e.value.code == 2 and "nope" in capsys.readouterr().err
