"""The checks' random streams (trackcheck/checks/_shared/_streams.py) are distinct: no two
checks, and no check's second stream (``+1`` in its comment), draw the same seed offset."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from trackcheck.checks._shared import _streams

STREAM = re.compile(r"^([A-Z_]+): Final = (\d+)\s*#(.*)$", re.M)


def offsets(source: str) -> list[tuple[str, int]]:
    """(name, offset) of every stream the module declares, a ``+1`` stream included."""
    out = []
    for name, value, comment in STREAM.findall(source):
        out.append((name, int(value)))
        if "+1" in comment:
            out.append((f"{name}+1", int(value) + 1))
    return out


def clashes(source: str) -> dict[int, list[str]]:
    counts = Counter(v for _, v in offsets(source))
    return {v: [n for n, w in offsets(source) if w == v] for v, c in counts.items() if c > 1}


def test_every_stream_is_read_from_the_module():
    found = dict(offsets(Path(_streams.__file__).read_text()))
    assert {n: v for n, v in found.items() if "+" not in n} == {
        n: v for n, v in vars(_streams).items() if n.isupper()
    }


def test_no_two_streams_share_an_offset():
    assert clashes(Path(_streams.__file__).read_text()) == {}


def test_a_clash_with_a_second_stream_is_found():
    source = "A: Final = 41  # a: its runs (+1 for the second)\nB: Final = 42  # b\n"
    assert clashes(source) == {42: ["A+1", "B"]}
