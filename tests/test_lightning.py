"""trackcheck inside PyTorch Lightning: one callback, the module's own step, loss, optimizer
and loaders, a failed gate that stops ``fit``. Real Lightning and torchmetrics, CPU, the
lightning-hydra-template module shape on 8x8 digits (tests/helpers/lightning_models.py).

The clean module on seeds 1 and 2 runs only when asked for:
``python -m pytest -m slow tests/test_lightning.py``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")
pytest.importorskip("torchmetrics")

import helpers.lightning_models as M  # noqa: E402
import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402

from trackcheck import Report, Status  # noqa: E402
from trackcheck.integrations.lightning import (  # noqa: E402
    SanityCheckFailed,
    TrackcheckCallback,
    check_module,
)

BAD = (Status.FAIL, Status.ERROR)


def trainer(tmp_path: Path, *callbacks: Any, **kwargs: Any) -> pl.Trainer:
    kwargs.setdefault("logger", False)
    return pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
        **kwargs,
    )


def check(cls: type, tmp_path: Path, checks: Any = "all", seed: int = 0) -> Report:
    """The checklist on a fresh module of ``cls`` with the Trainer fit would attach."""
    dm = M.DigitsDataModule()
    dm.setup("fit")
    return check_module(
        cls(),
        dm,
        trainer(tmp_path),
        checks=checks,
        seed=seed,
        tracker=None,
        progress=False,
        output_dir=tmp_path / "trackcheck",
    )


def assert_clean(report: Report) -> None:
    bad = [c for c in report.checks if c.status in BAD]
    assert not bad, "\n".join(f"{c.name} {c.status}: {c.message}" for c in bad)
    assert report.passed


# --- a correct module passes ------------------------------------------------------------------
def test_clean_module_passes_the_checklist(tmp_path: Path) -> None:
    report = check(M.DigitsLitModule, tmp_path)
    assert_clean(report)
    # its training_step (self.log, torchmetrics holding the loss's graph) trained the checks
    assert "training step" in report["contract"].message
    assert report["overfit_batch"].status == Status.PASS


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_clean_module_passes_the_checklist_on_other_seeds(tmp_path: Path, seed: int) -> None:
    assert_clean(check(M.DigitsLitModule, tmp_path, seed=seed))


def test_clean_manual_optimization_module_passes_the_training_checks(tmp_path: Path) -> None:
    report = check(M.ManualLitModule, tmp_path, checks=["contract", "overfit_batch"])
    assert_clean(report)
    assert "training step" in report["contract"].message


def test_a_module_with_two_optimizers_trains_both_parts(tmp_path: Path) -> None:
    report = check(M.TwoOptimizers, tmp_path, checks=["contract", "overfit_batch"])
    assert_clean(report)  # the contract finds every parameter in one of the optimizers
    assert report["contract"].metrics["params_not_in_optimizer"] == 0


# --- planted bugs in the step and its loss -----------------------------------------------------
def test_softmax_before_cross_entropy_in_the_step_fails_the_contract(tmp_path: Path) -> None:
    r = check(M.SoftmaxBeforeCrossEntropy, tmp_path, checks=["contract"])["contract"]
    assert r.status == Status.FAIL
    assert "levels off" in r.message and "softmax" in r.message


def test_summed_loss_in_the_step_is_a_contract_warning(tmp_path: Path) -> None:
    # a sum over the batch scales the effective lr with the batch size: a choice some
    # programs make on purpose (pytorch/examples' VAE), so named as a warning, not a fail
    r = check(M.SummedLoss, tmp_path, checks=["contract"])["contract"]
    assert r.status == Status.WARN
    assert "the loss grows with the batch" in r.message


def test_manual_step_without_zero_grad_fails_the_contract(tmp_path: Path) -> None:
    r = check(M.ManualWithoutZeroGrad, tmp_path, checks=["contract"])["contract"]
    assert r.status == Status.FAIL
    assert "does not clear the gradients" in r.message


# --- the callback in trainer.fit -----------------------------------------------------------
def test_failed_gate_stops_fit_before_the_first_training_step(tmp_path: Path) -> None:
    model = M.SoftmaxBeforeCrossEntropy()
    before = [p.detach().clone() for p in model.parameters()]
    t = trainer(tmp_path, TrackcheckCallback(checks=["contract"], progress=False))
    with pytest.raises(SanityCheckFailed) as e:
        t.fit(model, datamodule=M.DigitsDataModule())
    assert e.value.code == 2  # the CLI's code for a broken contract
    assert "contract" in str(e.value) and str(tmp_path / "trackcheck" / "report.json") in str(
        e.value
    )
    assert t.global_step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_passing_gate_trains_and_logs_the_verdict_to_the_trainers_logger(tmp_path: Path) -> None:
    logger = pl.loggers.CSVLogger(tmp_path, name="run")
    cb = TrackcheckCallback(checks=["contract", "overfit_batch"], progress=False)
    t = trainer(tmp_path, cb, logger=logger)
    t.fit(M.DigitsLitModule(), datamodule=M.DigitsDataModule())
    assert t.global_step == 2  # training ran after the gate
    assert cb.report is not None and cb.report.passed
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    sanity = next(r for r in rows if r.get("sanity/passed"))
    assert float(sanity["sanity/passed"]) == 1.0
    assert float(sanity["sanity/overfit_batch/ok"]) == 1.0
    hparams = (Path(logger.log_dir) / "hparams.yaml").read_text()
    assert "sanity/verdict: passed" in hparams


def test_failed_gate_is_logged_to_mlflow_under_the_trainers_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils

    monkeypatch.chdir(tmp_path)  # a sqlite store puts its artifacts in ./mlruns
    # MLFlowLogger sets MLflow's process-wide tracking URI: put it back after this test
    monkeypatch.setattr(utils, "_tracking_uri", getattr(utils, "_tracking_uri", None))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = pl.loggers.MLFlowLogger(experiment_name="lit", tracking_uri=uri)
    t = trainer(tmp_path, TrackcheckCallback(checks=["contract"], progress=False), logger=logger)
    with pytest.raises(SanityCheckFailed):
        t.fit(M.SoftmaxBeforeCrossEntropy(), datamodule=M.DigitsDataModule())
    run = MlflowClient(tracking_uri=uri).get_run(logger.run_id)
    assert run.data.metrics["sanity/passed"] == 0.0
    assert run.data.metrics["sanity/contract/ok"] == 0.0
    assert run.data.params["sanity/gated_on"] == "contract"


# --- fast_dev_run and several processes ------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "steps"), [("DigitsLitModule", 1), ("SoftmaxBeforeCrossEntropy", 0)]
)
def test_fast_dev_run_runs_the_stage_and_its_gate(tmp_path: Path, module: str, steps: int) -> None:
    cb = TrackcheckCallback(checks=["contract"], progress=False)
    t = pl.Trainer(fast_dev_run=True, callbacks=[cb], default_root_dir=tmp_path)
    try:
        t.fit(getattr(M, module)(), datamodule=M.DigitsDataModule())
    except SanityCheckFailed as e:
        assert e.code == 2 and "contract" in str(e)
    assert cb.report is not None and cb.report.passed == bool(steps)
    assert t.global_step == steps  # fast_dev_run's one step, only after a passing gate


def test_synchronized_batchnorm_over_processes_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # DDP with sync_batchnorm=True: Lightning turns each BatchNorm into a SyncBatchNorm,
    # whose forward in a check's copy would wait on the other ranks, which wait on rank 0
    from trackcheck.integrations.lightning import cannot_run

    t = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        sync_batchnorm=True,
        logger=False,
        default_root_dir=tmp_path,
    )
    assert t.world_size == 2
    module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(M.DigitsLitModule())
    assert cannot_run(t, M.DigitsLitModule()) is None  # plain DDP runs (rank 0, broadcast)
    with pytest.raises(SanityCheckFailed) as e:
        TrackcheckCallback(progress=False).on_fit_start(t, module)
    assert e.value.code == 2
    line = e.value.message  # the one line rank 0 prints and every rank stops with
    assert "\n" not in line and "sync_batchnorm=True" in line and "devices=1" in line
    # Lightning's own INFO lines about the Trainer's devices aside, trackcheck says only it
    # (on rank 0: which process is rank 0 comes from the environment the tests run in)
    said = [x for x in capsys.readouterr().err.splitlines() if x.startswith("trackcheck")]
    assert said == ([f"trackcheck: error: {line}"] if t.is_global_zero else [])


# --- python -m trackcheck on lightning-hydra-template configs ----------------------------------
def user_configs(tmp_path: Path, module: str = "DigitsLitModule") -> Path:
    """A lightning-hydra-template config dir: ``model/mnist.yaml`` a LightningModule,
    ``data/digits.yaml`` a DataModule (named like trackcheck's shipped 8x8 digits), and a
    ``train.yaml`` / ``config.yaml`` of the user's own app beside them."""
    configs = tmp_path / "configs"
    (configs / "model").mkdir(parents=True)
    (configs / "data").mkdir()
    (configs / "model" / "mnist.yaml").write_text(
        f"_target_: helpers.lightning_models.{module}\nlr: 0.003\n"
    )
    (configs / "data" / "digits.yaml").write_text(
        "_target_: helpers.lightning_models.DigitsDataModule\nbatch_size: 64\n"
    )
    (configs / "config.yaml").write_text("defaults:\n  - model: mnist\ntrainer: {max_epochs: 3}\n")
    return configs


def trackcheck_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}"}
    return subprocess.run(
        [sys.executable, "-m", "trackcheck", *args, f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("module", "code"), [("DigitsLitModule", 0), ("SoftmaxBeforeCrossEntropy", 2)]
)
def test_cli_takes_a_lightning_module_and_datamodule_from_the_users_configs(
    tmp_path: Path, module: str, code: int
) -> None:
    configs = user_configs(tmp_path, module)
    out = trackcheck_cli(
        tmp_path,
        *("--config-dir", str(configs), "+model=mnist", "data=digits"),  # no + needed
        *("checks.run=[contract,overfit_batch]", "tracker=none", "progress=false"),
    )
    assert out.returncode == code, out.stderr[-2000:]
    # the user's data/digits.yaml, not trackcheck's shipped data/digits of the same name
    job = (tmp_path / "out" / ".hydra" / "config.yaml").read_text()
    assert "_target_: helpers.lightning_models.DigitsDataModule" in job
    if code:
        assert "levels off" in out.stderr and "softmax" in out.stderr


@pytest.mark.parametrize("spelling", ["data=digits", "+data=digits"])
def test_cli_data_override_works_with_or_without_plus(tmp_path: Path, spelling: str) -> None:
    # the user's model brings no data (add it: +data), the shipped ones do (replace it: data=)
    configs = user_configs(tmp_path)
    for model in ("+model=mnist", "+model=resnet"):
        out = trackcheck_cli(
            tmp_path, "--cfg", "job", "--config-dir", str(configs), model, spelling
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "_target_: helpers.lightning_models.DigitsDataModule" in out.stdout
        assert "trainer:" not in out.stdout  # the config.yaml of their app is not ours


def test_cli_without_data_says_so_in_one_line(tmp_path: Path) -> None:
    out = trackcheck_cli(tmp_path, "--config-dir", str(user_configs(tmp_path)), "+model=mnist")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("trackcheck: error: no data selected: pick a data config with data=")
    assert not (tmp_path / "out").exists()  # a refused run leaves no output dir


def test_cli_refuses_a_shipped_name_that_a_searchpath_dir_also_has(tmp_path: Path) -> None:
    # hydra.searchpath dirs come after trackcheck's configs, so data=digits would silently be
    # the shipped 8x8 digits: refused, naming both (--config-dir puts the user's first)
    searchpath = f"hydra.searchpath=[file://{user_configs(tmp_path)}]"
    out = trackcheck_cli(tmp_path, "+model=mnist", "data=digits", searchpath)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "shipped data/digits" in line and str(tmp_path / "configs") in line
    assert "--config-dir" in line


def test_import_trackcheck_does_not_import_lightning() -> None:
    code = "import sys, trackcheck, trackcheck.integrations; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
