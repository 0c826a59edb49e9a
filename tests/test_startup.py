"""Start-up: what the CLI imports (no torch to print help, no tracker SDK it does not use),
the help cache, the console script, the log file, and no output dir for runs never started.

What a command imports is read from ``python -X importtime`` (PYTHONPROFILEIMPORTTIME for
the console script), not timed: timings are the benchmark's job (scripts/bench.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trackcheck import cli, startup
from trackcheck.config import builtin_checks_node

HEAVY = ("torch", "mlflow", "wandb", "matplotlib", "scipy")


def imported(stderr: str) -> set[str]:
    """The top-level packages in ``-X importtime`` output (``import time: self | cum | name``)."""
    return {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def python_m(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trackcheck", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_help_lists_every_check_param_without_importing_torch(tmp_path):
    p = python_m("--help", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "model: gpt, mlp, resnet" in p.stdout  # the config groups
    assert "  overfit_batch:\n    n_examples: " in p.stdout  # its params, from the cache
    assert not imported(p.stderr) & set(HEAVY), sorted(imported(p.stderr) & set(HEAVY))
    assert not (tmp_path / "outputs").exists()


def test_no_model_answers_before_torch_and_leaves_no_output_dir(tmp_path):
    p = python_m("seed=1", cwd=tmp_path)
    assert p.returncode == 2
    assert "no model selected" in p.stderr and "gpt, mlp, resnet" in p.stderr
    assert not imported(p.stderr) & set(HEAVY), sorted(imported(p.stderr) & set(HEAVY))
    assert not list(tmp_path.iterdir())  # no outputs/<date>/<time> for trackcheck-gate


def test_help_cache_equals_the_live_schema():
    from trackcheck._schema_cache import CHECKS

    live = builtin_checks_node()
    assert list(CHECKS.items()) == list(live.items()), (
        "trackcheck/_schema_cache.py is stale (a check or a Params default changed): "
        "regenerate it with `python -m trackcheck.config`"
    )


def test_help_with_a_check_plugin_installed_uses_the_live_schema(monkeypatch):
    import trackcheck.config as config

    monkeypatch.setattr(config, "plugins", lambda: ["my_pkg.my_check"])  # the cache lacks it
    (checks,) = [f for f in dataclasses.fields(config.help_schema()) if f.name == "checks"]
    assert checks.type.__name__ == "ChecksConfig"  # one typed field per registered check


def test_quick_help_prints_what_hydras_own_help_prints(monkeypatch, capsys):
    argv = ["--help", "+model=mlp", "checks=fast"]
    cli.register_configs(for_help=True)
    startup.print_help(argv, "trackcheck.conf", "config")
    quick = capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["trackcheck", *argv])
    with pytest.raises(SystemExit):  # Hydra's app_help, the slow way, then exit(0)
        cli.hydra_main()
    assert capsys.readouterr().out == quick
    assert "== Config ==" in quick and "width: 64" in quick


@pytest.mark.parametrize(
    "argv,no_model",
    [
        ([], True),
        (["-m", "seed=1,2", "hydra.run.dir=x"], True),
        (["loss=model"], True),  # "model" as a value selects no model
        (["+model=mlp"], False),
        (["~model"], False),
        (["--config-dir", "my_conf"], False),  # its config may pick a model: Hydra decides
        (["hydra.searchpath=[file://my_conf]"], False),
    ],
)
def test_selects_no_model_only_when_nothing_can_select_one(argv, no_model):
    assert startup.selects_no_model(argv) is no_model


@pytest.mark.parametrize(
    "argv,prestart",
    [
        (["+model=resnet"], True),
        (["+model=resnet", "checks.run=[all]"], True),
        (["+model=resnet", "checks.run=[contract,determinism,loss_at_init,full_eval]"], True),
        (["+model=resnet", "checks.run=[loss_at_init]"], False),  # drawn in-process
        (["-m", "+model=resnet", "hydra/launcher=joblib"], False),  # jobs start their own
        (["+model=resnet", "--cfg", "job"], False),  # prints the config, runs nothing
    ],
)
def test_the_cli_starts_the_figure_worker_first_only_for_stages_that_use_it(argv, prestart):
    assert startup.figures_in_worker(argv, min_checks=4) is prestart


@pytest.mark.parametrize("args", [["checks.run=[nope]"], ["model._target_=nope.Missing"]])
def test_a_refused_config_leaves_no_output_dir(args, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    argv = ["trackcheck", "+model=mlp", "tracker=none", "progress=false", *args]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2
    assert "trackcheck: error:" in capfd.readouterr().err
    assert not list(tmp_path.iterdir())  # outputs/<date>/<time>, then outputs/<date>, gone


def test_only_a_dir_with_hydras_files_alone_is_removed(tmp_path):
    for name in ("refused", "reported", "users"):
        (tmp_path / "outputs" / name / ".hydra").mkdir(parents=True)
        (tmp_path / "outputs" / name / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (tmp_path / "outputs" / name / "trackcheck.log").write_text("")
    (tmp_path / "outputs" / "reported" / "report.json").write_text("{}")
    (tmp_path / "outputs" / "users" / "notes.txt").write_text("mine")
    for name in ("refused", "reported", "users"):
        startup.remove_unstarted(tmp_path / "outputs" / name, "trackcheck.log", tmp_path)
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["reported", "users"]
    assert not startup.remove_unstarted(tmp_path, "trackcheck.log", tmp_path)  # never cwd


# --- one real stage through the installed console script, on the user's own model ---------
MY_PKG = '''
from torch import nn


class MyNet(nn.Sequential):
    """A user's model in ./my_pkg, found by the console script like by python -m."""

    def __init__(self, in_shape, out_features, **unused):
        super().__init__(nn.Flatten(), nn.Linear(in_shape[-1], out_features))
'''


@pytest.fixture(scope="module")
def console_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    script = Path(sys.executable).with_name("trackcheck")  # what pip installed beside python
    if not script.is_file():
        pytest.skip(f"the console script is not installed at {script} (pip install -e .)")
    cwd = tmp_path_factory.mktemp("user_project")
    (cwd / "my_pkg").mkdir()
    (cwd / "my_pkg" / "__init__.py").write_text(MY_PKG)
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # the cwd must come from the entry point, not from here
    args = ["+model=mlp", "model._target_=my_pkg.MyNet", "tracker=none"]
    p = subprocess.run(
        [str(script), *args, "checks.run=[loss_at_init]", "progress=false"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return p, cwd


@pytest.mark.slow
def test_console_script_imports_the_users_package_from_the_cwd(console_run):
    p, cwd = console_run
    assert p.returncode == 0, p.stderr[-3000:]
    (report,) = cwd.glob("outputs/*/*/report.json")
    assert json.loads(report.read_text())["config"]["model"]["_target_"] == "my_pkg.MyNet"


@pytest.mark.slow
def test_tracker_none_imports_no_tracker_sdk(console_run):
    p, _ = console_run
    assert "torch" in imported(p.stderr)  # the importtime listing is there
    assert not imported(p.stderr) & {"mlflow", "wandb"}


@pytest.mark.slow
def test_the_log_file_holds_each_checks_verdict_and_the_report(console_run):
    p, cwd = console_run
    (log,) = cwd.glob("outputs/*/*/trackcheck.log")
    text = log.read_text()
    assert "loss_at_init: started" in text
    assert "loss_at_init: pass in " in text
    assert "tracker: backend=none" in text
    assert f"report: {log.parent / 'report.json'}" in text
    assert "loss_at_init: started" not in p.stdout + p.stderr  # the terminal has the bar


def test_importing_every_check_module_imports_no_scipy_or_matplotlib(tmp_path):
    # check modules are imported to run any stage; scipy (~0.6 s) and matplotlib are imported
    # when a check computes or draws with them, not before the first check starts
    code = "from trackcheck.registry import all_checks; all_checks()"
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert not imported(p.stderr) & {"scipy", "matplotlib", "sklearn"}
