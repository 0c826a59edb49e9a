"""The checklist's order and the checks' relations are declared once, in trackcheck/checks/
(__init__.py: CHECKLIST, READS, SHARES and the docstring's table), and the code agrees."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import trackcheck.checks as checks_pkg
from trackcheck.checks import CHECKLIST, READS, SHARES
from trackcheck.core import CheckResult, Status
from trackcheck.registry import _REGISTRY, all_checks, register

CHECKS_DIR = Path(checks_pkg.__file__).parent


def builtin_names() -> list[str]:
    return [n for n, s in all_checks().items() if s.fn.__module__.startswith("trackcheck.checks.")]


def test_every_built_in_check_is_listed_once_and_every_listed_one_exists():
    assert len(set(CHECKLIST)) == len(CHECKLIST)
    unlisted = sorted(set(builtin_names()) - set(CHECKLIST))
    assert not unlisted, f"list {unlisted} in CHECKLIST and the table of checks/__init__.py"
    assert set(CHECKLIST) <= set(builtin_names()), "CHECKLIST names a check no module registers"


def test_the_stage_runs_the_built_in_checks_in_the_listed_order():
    assert builtin_names() == list(CHECKLIST)


def test_the_docstring_table_lists_the_checks_in_order_with_their_fast_flag():
    # the rows between the table's second and third rule (=== ==== ===)
    table = re.split(r"^=+ =+ =+$", checks_pkg.__doc__ or "", flags=re.M)[2]
    rows = re.findall(r"^([a-z_]+) {2,}(yes)? *", table, re.M)
    specs = all_checks()
    assert [name for name, _ in rows] == list(CHECKLIST)
    assert all((fast == "yes") == specs[name].fast for name, fast in rows)


def test_a_check_runs_after_every_check_whose_result_it_reads():
    for reader, sources in READS.items():
        for source in sources:
            assert CHECKLIST.index(source) < CHECKLIST.index(reader), (reader, source)


def test_lr_range_reads_the_checks_its_after_parameter_names():
    from trackcheck.checks.lr_range import LrRangeParams

    assert tuple(LrRangeParams().after) == READS["lr_range"]


GRADIENT_FLOW = "trackcheck.checks.gradient_flow"


def test_the_checks_that_import_gradient_flows_note_are_its_declared_readers():
    importers = set()
    for path in CHECKS_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == GRADIENT_FLOW:
                importers.add(path.stem)
    assert importers == {r for r, sources in READS.items() if "gradient_flow" in sources}


def test_shared_measurements_name_listed_checks():
    for users in SHARES.values():
        assert len(users) >= 2 and set(users) <= set(CHECKLIST)


@pytest.fixture
def temp_checks():
    before = dict(all_checks())
    yield register
    _REGISTRY.clear()
    _REGISTRY.update(before)


def test_an_unlisted_check_runs_after_the_built_ins_by_its_order(temp_checks):
    def ok(ctx, p):
        return CheckResult("x", Status.PASS, "ok")

    temp_checks("t_late", object, order=5)(ok)
    temp_checks("t_early", object, order=1)(lambda ctx, p: ok(ctx, p))
    assert list(all_checks())[-2:] == ["t_early", "t_late"]
    assert list(all_checks())[: len(CHECKLIST)] == list(CHECKLIST)
