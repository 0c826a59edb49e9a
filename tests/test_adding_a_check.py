"""docs/adding-a-check.md is complete: following it alone, in a copy of the repository, adds
a check with a figure and a random stream of its own, and the tests the page names pass.

The page's blocks that open with a path comment are applied as written (a new file, an
append, or an insertion after a named line), then the commands of its last ```bash block
run in the copy, with the copy's trackcheck first on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "adding-a-check.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
AFTER = ", after the line: "


def edits(page: str) -> list[tuple[str, str, str]]:
    """(path, how, text) for each block opening with ``# PATH``: how is "new", "append" or
    the line to insert after."""
    out = []
    for lang, body in BLOCK.findall(page):
        first, _, rest = body.partition("\n")
        if lang not in ("python", "text") or not first.startswith("# ") or "/" not in first:
            continue
        target = first[2:]
        if AFTER in target:
            path, line = target.split(AFTER, 1)
            out.append((path, line, rest))
        elif target.endswith(" (append)"):
            out.append((target.removesuffix(" (append)"), "append", rest))
        else:
            out.append((target, "new", rest))
    return out


def apply(repo: Path, path: str, how: str, text: str) -> None:
    file = repo / path
    if how == "new":
        assert not file.exists(), f"the page would overwrite {path}"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    elif how == "append":
        file.write_text(file.read_text() + text)
    else:
        lines = file.read_text().splitlines(keepends=True)
        at = next(i for i, ln in enumerate(lines) if ln.strip().startswith(how.strip()))
        file.write_text("".join(lines[: at + 1]) + text + "".join(lines[at + 1 :]))


def commands(page: str) -> list[str]:
    """The lines of the page's last ```bash block."""
    bash = [body for lang, body in BLOCK.findall(page) if lang == "bash"]
    return [ln for ln in bash[-1].splitlines() if ln.strip()]


def test_the_page_names_every_step():
    page = PAGE.read_text()
    paths = [p for p, _, _ in edits(page)]
    assert "trackcheck/checks/_shared/_streams.py" in paths  # a random stream of its own
    assert "trackcheck/checks/__init__.py" in paths  # its place in the checklist
    assert any(p.startswith("tests/test_") for p in paths)  # its test
    assert "plots.deferred(" in page and "@register(" in page and "CheckResult(" in page
    cmds = " ; ".join(commands(page))
    assert "python -m trackcheck.config" in cmds  # the schema cache
    assert "tests/test_fast_budget.py" in cmds and "tests/test_startup.py" in cmds


@pytest.mark.slow
def test_following_the_page_adds_a_check_that_runs_and_passes_the_suite(tmp_path):
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("trackcheck", "tests", "docs"):
        shutil.copytree(ROOT / d, repo / d, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", repo)
    page = PAGE.read_text()
    for path, how, text in edits(page):
        apply(repo, path, how, text)

    env = {**os.environ, "PYTHONPATH": str(repo)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for cmd in commands(page):
        p = subprocess.run(
            ["bash", "-c", cmd], cwd=repo, env=env, capture_output=True, text=True, timeout=900
        )
        assert p.returncode == 0, f"{cmd}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"

    assert '"init_scale"' in (repo / "trackcheck" / "_schema_cache.py").read_text()
    (report,) = (repo / "outputs").rglob("report.json")
    (check,) = json.loads(report.read_text())["checks"]
    assert (check["name"], check["status"]) == ("init_scale", "pass")
    assert (report.parent / "figures" / "init_scale" / "outputs.png").stat().st_size > 0
