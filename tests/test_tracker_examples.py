"""Each tracker class's docstring example runs as written (in a fresh working directory,
W&B offline with no API key) and ends with a passing stage."""

from __future__ import annotations

import re
import textwrap

import pytest
import wandb
from helpers.trackers import wandb_env

from trackcheck.trackers.base import NoTracker
from trackcheck.trackers.mlflow import MLflowTracker
from trackcheck.trackers.wandb import WandbTracker


def example(cls: type) -> str:
    """The code of the ``Example (...)::`` block of ``cls``'s docstring."""
    m = re.search(r"Example[^\n]*::\n\n(.*?)(?:\n\s*\n(?!\s{8})|\Z)", cls.__doc__ or "", re.S)
    assert m, f"{cls.__name__} has no example"
    return textwrap.dedent(m.group(1))


@pytest.mark.parametrize("cls", [NoTracker, MLflowTracker, WandbTracker])
def test_the_docstring_example_runs_and_passes(cls, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    wandb_env(monkeypatch, tmp_path / "wb-home")
    namespace: dict = {}
    try:
        exec(compile(example(cls), f"<{cls.__name__} example>", "exec"), namespace)
    finally:
        wandb.teardown()
    assert namespace["report"].passed
    printed = capsys.readouterr().out
    assert "passed" in printed


def test_the_examples_say_what_they_print():
    assert "FINISHED passed" in example(MLflowTracker)
    assert "offline-run-" in example(WandbTracker)
    assert "report.json" in example(NoTracker)
