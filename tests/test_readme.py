"""The README and docs/ cannot drift silently: every ``python -m trackcheck ...`` command they
show (in ```bash blocks, skipped ones included, and in inline code) composes with Hydra, and
their ```bash blocks parse the way scripts/check_readme.py runs them. Composing is cheap (no
model is built, nothing runs); ``python scripts/check_readme.py`` runs the commands."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from trackcheck.cli import register_configs

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_readme", ROOT / "scripts/check_readme.py")
assert spec is not None and spec.loader is not None
check_readme = importlib.util.module_from_spec(spec)
sys.modules["check_readme"] = check_readme  # dataclasses look their module up there
spec.loader.exec_module(check_readme)
# page (relative to the repository root) -> its text: README.md, then docs/*.md
PAGES = {
    p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in check_readme.pages()
}

INVOCATION = ["python", "-m", "trackcheck"]
SHELL_OPS = {"&&", "||", ";", "|", ")", "("}


def split(text: str, comments: bool = True) -> list[str]:
    """Shell words, with ``( ) && | ;`` as words of their own (``$(... "python -m ...")``)."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#" if comments else ""
    return list(lex)


def _invocations(tokens: list[str]) -> list[list[str]]:
    """The argument lists of every ``python -m trackcheck`` in a shell command's tokens (a
    quoted one, as in ``sbatch --wrap "python -m trackcheck ..."``, included)."""
    found = []
    for i, tok in enumerate(tokens):
        if " " in tok and "python -m trackcheck" in tok:
            found += _invocations(split(tok, comments=False))
        if tokens[i : i + 3] == INVOCATION:
            args = []
            for t in tokens[i + 3 :]:
                if t in SHELL_OPS:
                    break
                args.append(t)
            found.append(args)
    return found


def readme_invocations() -> list[tuple[str, list[str]]]:
    """(where, args) for each ``python -m trackcheck`` in the README and docs/."""
    out = []
    for page, text in PAGES.items():
        for c in check_readme.commands(text, page):
            for args in _invocations(split(c.text)):
                out.append((c.where, args))
        for m in re.finditer(r"`(python -m trackcheck[^`]*)`", text):
            line = text.count("\n", 0, m.start()) + 1
            for args in _invocations(split(m.group(1), comments=False)):
                out.append((f"{page}:{line}", args))
    return out


def _one_value(override: str) -> str:
    """A sweep override (``a=1,2``, ``interval(1e-4,1e-1)``) as one of its values: a job's."""
    (o,) = OverridesParser.create().parse_overrides([override])
    if not o.is_sweep_override():
        return override
    key = override.split("=", 1)[0]
    value = o.value()
    if isinstance(value, ChoiceSweep | RangeSweep):
        return f"{key}={next(iter(o.sweep_string_iterator()))}"
    assert isinstance(value, IntervalSweep), override
    return f"{key}={value.start}"


def overrides_of(args: list[str], config_dir: Path) -> list[str]:
    """The overrides a CLI line composes: Hydra's flags (-m, --config-dir DIR) turned into
    their effect, Hydra's own keys (hydra/launcher=..., hydra.sweeper....) left out: they
    belong to plugins that may not be installed, and trackcheck's config is what can drift."""
    out, it = [], iter(args)
    for a in it:
        if a in ("-m", "--multirun"):
            continue
        if a in ("--config-dir", "-cd"):
            out.append(f"hydra.searchpath=[file://{config_dir / next(it)}]")
            continue
        assert not a.startswith("-"), f"unexpected flag {a}"
        if a.startswith(("hydra/", "hydra.", "+hydra")):
            continue
        out.append(_one_value(a))
    return out


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pages' own example config files (```yaml blocks opening ``# my_configs/...``)."""
    root = tmp_path_factory.mktemp("readme")
    for text in PAGES.values():
        for m in re.finditer(r"```yaml\n# (my_configs/\S+\.yaml).*?\n(.*?)```", text, re.S):
            path = root / m.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(m.group(2))
    return root


INVOCATIONS = readme_invocations()


def test_the_pages_show_trackcheck_commands_and_mark_the_unrunnable() -> None:
    assert len(INVOCATIONS) >= 10
    assert {w.split(":")[0] for w, _ in INVOCATIONS} >= {"README.md", "docs/sweeps.md"}
    cmds = [c for page, text in PAGES.items() for c in check_readme.commands(text, page)]
    assert any(c.expect == 0 for c in cmds) and any(c.expect is None for c in cmds)
    # installs and cluster launches never run as a side effect of checking the pages
    for c in cmds:
        if c.text.startswith(("pip install", "sbatch", "mlflow ui", "mlflow server")):
            assert c.expect is None, f"{c.where} would run: {c.text}"


def test_the_readme_sets_up_runs_and_tests_with_one_command_each() -> None:
    # a newcomer's three commands, as CI (.ci/run) runs them
    cmds = [c.text for c in check_readme.commands(PAGES["README.md"])]
    assert cmds[:3] == ['pip install -e ".[dev]"', "python -m trackcheck +model=resnet",
                        "python -m pytest -q"]  # fmt: skip
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[dev]"' in ci and "python -m pytest -q" in ci


@pytest.fixture(scope="module")
def hydra_initialized() -> Iterator[None]:
    register_configs()
    with initialize_config_module("trackcheck.conf", version_base="1.3"):
        yield


@pytest.mark.usefixtures("hydra_initialized")
@pytest.mark.parametrize("where,args", INVOCATIONS, ids=[w for w, _ in INVOCATIONS])
def test_every_readme_command_composes(where: str, args: list[str], config_dir: Path) -> None:
    cfg = compose("config", overrides=overrides_of(args, config_dir))
    assert "checks" in cfg and "gate" in cfg, where
