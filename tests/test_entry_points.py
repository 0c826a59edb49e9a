"""Third-party checks: a distribution's ``trackcheck.checks`` entry point registers its check,
which then shows up in the registry, the config schema and the CLI like a built-in one.

Each test builds a tiny installed distribution in tmp_path (a package plus a ``*.dist-info``
folder with METADATA and entry_points.txt) and runs Python in a subprocess with it on
PYTHONPATH: the registry imports checks once per process, so this process's registry stays
as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHECK_MODULE = '''
from dataclasses import dataclass

from trackcheck import CheckResult, Status, register


@dataclass
class MyCheckParams:
    some_param: int = 1


@register("mycheck", MyCheckParams, order=900)
def mycheck(ctx, p: MyCheckParams) -> CheckResult:
    """A plugin's check: reports its parameter."""
    return CheckResult(
        "mycheck", Status.PASS, f"some_param={p.some_param}",
        metrics={"some_param": float(p.some_param)},
    )
'''


def make_distribution(root: Path, name: str, entry_points: str, modules: dict[str, str]) -> Path:
    """An installed distribution ``name`` 0.1 in ``root``: its package's modules and the
    metadata importlib.metadata reads (what ``pip install`` would have written)."""
    pkg = root / name.replace("-", "_")
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for module, source in modules.items():
        (pkg / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return root


def run_python(args: list[str], path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with the distribution in ``path`` importable (as if installed there)."""
    paths = [str(path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    return make_distribution(
        tmp_path / "site",
        "mycheck-pkg",
        "[trackcheck.checks]\nmycheck = mycheck_pkg.mycheck\n",
        {"mycheck": CHECK_MODULE},
    )


SHOW = """
import dataclasses, json
from trackcheck.config import schema
from trackcheck.registry import all_checks

checks = {f.name: f for f in dataclasses.fields(schema())}["checks"].default_factory()
print(json.dumps({
    "registered": list(all_checks()),
    "doc": all_checks()["mycheck"].doc,
    "schema": dataclasses.asdict(checks.mycheck),
}))
"""


def test_plugin_check_is_registered_and_in_the_schema(plugin, tmp_path):
    p = run_python(["-c", SHOW], plugin, tmp_path)
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert "mycheck" in shown["registered"] and "overfit_batch" in shown["registered"]
    assert shown["doc"] == "A plugin's check: reports its parameter."
    assert shown["schema"] == {"some_param": 1}


@pytest.mark.slow
def test_cli_accepts_the_plugins_params_and_rejects_a_typo(plugin, tmp_path):
    cfg = ["-m", "trackcheck", "--cfg", "job", "+model=mlp", "checks.run=[mycheck]"]
    p = run_python([*cfg, "checks.mycheck.some_param=3"], plugin, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "mycheck:\n    some_param: 3" in p.stdout
    typo = run_python([*cfg, "checks.mycheck.some_parm=3"], plugin, tmp_path)
    assert typo.returncode != 0 and "some_parm" in typo.stderr


@pytest.mark.slow
def test_cli_runs_the_plugin_check_with_its_params(plugin, tmp_path):
    out = tmp_path / "out"
    args = ["checks.run=[mycheck]", "checks.mycheck.some_param=3", "tracker=none"]
    p = run_python(
        ["-m", "trackcheck", "+model=mlp", *args, "progress=false", f"hydra.run.dir={out}"],
        plugin,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    report = json.loads((out / "report.json").read_text())
    [check] = report["checks"]
    assert (check["name"], check["status"], check["metrics"]) == (
        "mycheck", "pass", {"some_param": 3.0},
    )  # fmt: skip


def test_a_plugin_that_fails_to_import_names_its_entry_point_and_distribution(tmp_path):
    site = make_distribution(
        tmp_path / "site",
        "broken-pkg",
        "[trackcheck.checks]\nbroken = broken_pkg.broken\n",
        {"broken": "import no_such_module_here\n"},
    )
    code = "from trackcheck.registry import all_checks\nall_checks()"
    p = run_python(["-c", code], site, tmp_path)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert "CheckImportError" in last
    assert "broken = broken_pkg.broken" in last and "distribution broken-pkg 0.1" in last
    assert "No module named 'no_such_module_here'" in last
