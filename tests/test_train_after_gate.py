"""Gate, then train: ``train._target_`` runs only when the gate passes, inside the sanity run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from trackcheck.cli import UsageError, check_then_train, register_configs

FAST = ["checks.run=[loss_at_init,init_bias]", "progress=false"]
PASSING = ["+model=mlp", "data=breast_cancer"]
# planted bug: raw diabetes targets (mean about 152) with a zero output bias: init_bias fails
FAILING = ["+model=mlp", "data=diabetes", "model.out_bias=null"]

USER_TRAIN = '''
import json
from pathlib import Path

import mlflow


def train(cfg, log, fail=False):
    """A user's training function: logs a curve to the active MLflow run, if there is one."""
    run = mlflow.active_run()
    if run is not None:
        for step, loss in enumerate([0.9, 0.5, 0.2]):
            mlflow.log_metric("train/loss", loss, step=step)
    Path(log).write_text(json.dumps({"lr": cfg.optim.lr, "run_id": run and run.info.run_id}))
    if fail:
        raise RuntimeError("diverged at step 3")
    return 0.25
'''


@pytest.fixture
def user_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``my_train.train`` importable; returns the file it writes when called."""
    pkg = tmp_path / "user"
    pkg.mkdir()
    (pkg / "my_train.py").write_text(USER_TRAIN)
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts in ./mlruns
    return tmp_path / "train_called.json"


def config(*overrides: str) -> DictConfig:
    register_configs()
    with initialize_config_module("trackcheck.conf", version_base="1.3"):
        return compose("config", overrides=[*FAST, *overrides])


def with_train(log: Path, *extra: str) -> list[str]:
    return ["train._target_=my_train.train", f"+train.log={log}", *extra]


def test_train_runs_after_a_passing_gate_with_the_composed_config(user_train, tmp_path):
    cfg = config(*PASSING, "tracker=none", *with_train(user_train))
    outcome = check_then_train(cfg, str(tmp_path / "out"), "t")
    assert outcome.report.passed and outcome.trained and outcome.train_result == 0.25
    assert json.loads(user_train.read_text())["lr"] == cfg.optim.lr


def test_train_is_not_called_when_the_gate_fails(user_train, tmp_path):
    cfg = config(*FAILING, "tracker=none", *with_train(user_train))
    outcome = check_then_train(cfg, str(tmp_path / "out"), "t")
    assert outcome.report.gated_on == ["init_bias"] and not outcome.trained
    assert not user_train.exists()


def test_unknown_train_target_fails_before_any_check_runs(user_train, tmp_path):
    cfg = config(*PASSING, "tracker=none", "train._target_=my_train.no_such_function")
    with pytest.raises(UsageError, match="could not build train"):
        check_then_train(cfg, str(tmp_path / "out"), "t")
    assert not (tmp_path / "out" / "report.json").exists()


# --- MLflow: training logs into the sanity run -----------------------------------------------
@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated sqlite store for this module: creating MLflow's schema takes seconds."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    d = tmp_path_factory.mktemp("mlflow-template")
    SqlAlchemyStore(f"sqlite:///{d / 'mlflow.db'}", str(d / "mlruns")).engine.dispose()
    return d / "mlflow.db"


@pytest.fixture
def store(migrated_db: Path, tmp_path: Path) -> str:
    shutil.copyfile(migrated_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_training_curves_land_in_the_sanity_run(user_train, store, tmp_path):
    from mlflow import MlflowClient

    cfg = config(*PASSING, "tracker=mlflow", f"tracker.tracking_uri={store}",
                 *with_train(user_train))  # fmt: skip
    outcome = check_then_train(cfg, str(tmp_path / "out"), "t")
    run_id = outcome.report.tracker["run_id"]
    assert json.loads(user_train.read_text())["run_id"] == run_id  # train saw the sanity run
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["trackcheck.status"] == "passed"
    assert run.data.tags["mlflow.note.content"].startswith("**trackcheck: PASSED**")
    assert [m.value for m in client.get_metric_history(run_id, "train/loss")] == [0.9, 0.5, 0.2]


def test_a_training_crash_marks_the_run_failed(user_train, store, tmp_path):
    from mlflow import MlflowClient

    cfg = config(*PASSING, "tracker=mlflow", f"tracker.tracking_uri={store}",
                 *with_train(user_train, "+train.fail=true"))  # fmt: skip
    with pytest.raises(RuntimeError, match="diverged"):
        check_then_train(cfg, str(tmp_path / "out"), "t")
    run_id = json.loads(user_train.read_text())["run_id"]
    assert MlflowClient(tracking_uri=store).get_run(run_id).info.status == "FAILED"
