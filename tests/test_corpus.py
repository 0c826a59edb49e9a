"""The false-alarm corpus: correct programs re-implemented from official public examples
(tests/corpus) pass the full checklist, with no fail and no error, on every seed.

The full corpus over 3 seeds runs only when asked for, being far longer than the rest of
the suite (``python -m pytest --corpus tests/test_corpus.py``: about 37 minutes on 2 idle
cores, 15-60 s a run; ``CORPUS_ONLY=a,b`` narrows it); the default run checks three of the
cheapest programs on one seed (about 30 s). ``python scripts/corpus.py`` prints the same
runs as a table.
"""

from __future__ import annotations

import os

import corpus
import pytest
from corpus._run import run_program

SEEDS = [0, 1, 2]
# three cheap programs (2-8 s each), pytorch/examples MNIST among them, for the default run
SMOKE = ["pt_mnist", "pt_regression", "tut_quickstart"]


def test_every_program_says_where_it_comes_from() -> None:
    for name in corpus.names():
        m = corpus.module(name)
        assert m.__doc__ and getattr(m, "SOURCE", "").startswith("https://"), name
        assert callable(getattr(m, "program", None)), name


@pytest.mark.parametrize("name", SMOKE)
def test_cheap_correct_program_passes_the_checklist(name: str) -> None:
    o = run_program(name, seed=0)
    assert not o.failed, o.explain()


@pytest.mark.slow
@pytest.mark.corpus
def test_corpus_passes_the_checklist_on_every_seed() -> None:
    """Every program x every seed; the failures of all of them in one message."""
    if os.environ.get("CORPUS_ONLY"):
        names = os.environ["CORPUS_ONLY"].split(",")
    else:
        names = corpus.names()
    outcomes = [run_program(n, s) for n in names for s in SEEDS]
    bad = [o for o in outcomes if o.failed]
    rate = len(bad) / len(outcomes)
    assert not bad, (
        f"{len(bad)} of {len(outcomes)} runs ({rate:.1%}) end in a fail or error:\n"
        + "\n".join(o.explain() for o in bad)
    )
