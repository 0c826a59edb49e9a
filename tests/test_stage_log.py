"""What a stage prints besides its own lines: a model's own prints and warnings once per stage
(not once per fresh model), and each of trackcheck's lines once in a Hydra app that
configures its own logging handlers (the job log gets them, the console the progress
display)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import blobs
from torch import nn

import trackcheck


class Announced(nn.Module):
    """A user's model that prints and warns in its constructor, as nanoGPT (its parameter
    count) and Lightning (save_hyperparameters on a module attribute) do."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
        print("number of parameters: 0.00M")
        warnings.warn("Attribute 'net' is an instance of `nn.Module`", UserWarning, stacklevel=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_a_models_prints_and_warnings_show_once_per_stage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as a framework that repeats its warnings sets it
        report = trackcheck.run(
            Announced,
            blobs(),
            checks=["loss_at_init", "determinism", "overfit_batch"],
            tracker=None,
            progress=False,
        )
    assert report.passed
    assert capsys.readouterr().out.count("number of parameters") == 1
    assert sum("Attribute 'net'" in str(w.message) for w in caught) == 1


APP = """
import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    print("training")


if __name__ == "__main__":
    main()
"""

MODEL = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        print("building Net")
        self.lin = torch.nn.Linear(30, 1)

    def forward(self, x):
        return self.lin(x)  # [B, 1]: binary logits
"""

# the app's own logging: the root logger prints every record to the console and the job log
CONFIG = """
net: {_target_: my_model.Net}
sanity_data: {_target_: trackcheck.data.breast_cancer}
hydra:
  job_logging:
    version: 1
    formatters:
      simple: {format: '[%(name)s][%(levelname)s] - %(message)s'}
    handlers:
      console: {class: logging.StreamHandler, formatter: simple, stream: ext://sys.stdout}
      file:
        class: logging.FileHandler
        formatter: simple
        filename: ${hydra.runtime.output_dir}/${hydra.job.name}.log
    root: {level: INFO, handlers: [console, file]}
    disable_existing_loggers: false
  callbacks:
    trackcheck:
      _target_: trackcheck.callbacks.TrackcheckCallback
      model: net
      data: sanity_data
      checks: [loss_at_init, overfit_batch]
"""


def test_each_line_prints_once_in_a_hydra_app_with_its_own_logging(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "my_model.py").write_text(MODEL)
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{tmp_path}", "COLUMNS": "200"}
    p = subprocess.run(
        [sys.executable, "app.py", "hydra.run.dir=out", "hydra.job.name=app"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    console = p.stdout + p.stderr
    assert console.count("overfit_batch") == 1, console  # the progress line alone
    assert "[trackcheck][INFO]" not in console
    assert console.count("building Net") == 1  # the startup build; the checks' are quiet
    assert "training" in p.stdout  # the gate passed and the app ran
    log = (tmp_path / "out" / "app.log").read_text()
    assert "overfit_batch: pass" in log and "stage passed" in log  # the job log has them
