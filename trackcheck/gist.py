"""The stage's outcome at a glance, the same on every surface (console, report.html, the
MLflow description, the W&B notes): the verdict, then each finding (failures first, then
warnings) with a short reason: what is wrong and the fix.

A check's message says what it measured, why that is wrong and what to do, in that order
(what first, the fix last), with details in parentheses. ``reason`` keeps both ends: the
asides dropped (a parenthesis that names a config key stays: it is part of the fix), a
trailing note that repeats another check's finding dropped (that check has its own line),
and, when still too long, the middle clauses elided (`` … ``) between the first clause and
the longest tail of whole clauses that fits. The full message stays in report.html,
report.json and the trackers; this is what a person reads first.

    >>> reason("logits never leave [-2, inf] (now [-0.4, 0.8]): a clamp bounds them. "
    ...        "The loss expects logits: return the last Linear's output", budget=90)
    "logits never leave [-2, inf] … The loss expects logits: return the last Linear's output"
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import fields, is_dataclass
from typing import Any

from trackcheck.core import CheckResult, Report, Status

# failures first (they gate), then warnings; pass and skip are no findings
ORDER = (Status.FAIL, Status.ERROR, Status.WARN)
ELLIPSIS = " … "
# about two lines at 80 columns: room for the first clause and a fix
BUDGET = 150
MIN_FIX = 30  # a fix cut shorter than this says too little: the message's start instead
_OPEN, _CLOSE = "([{", ")]}"
# clause separators, at bracket depth 0: a reason is cut only at these
_SEPARATORS = (": ", "; ", ". ")


def findings(report: Report) -> list[CheckResult]:
    """The checks that failed, errored or warned: failures and errors first, then warnings,
    each group in the stage's order."""
    return [c for s in ORDER for c in report.checks if c.status == s]


def tally(report: Report) -> str:
    """``4 fail, 2 warn, 14 pass, 2 skip``: the most serious first, zeros left out."""
    n = Counter(c.status for c in report.checks)
    order = (*ORDER, Status.PASS, Status.SKIP)
    return ", ".join(f"{n[s]} {s.value}" for s in order if n[s])


def verdict_line(report: Report) -> str:
    """``trackcheck: FAILED (4 fail, 14 pass)``: the findings that follow name the checks."""
    return f"trackcheck: {report.status.upper()} ({tally(report)})"


def _is_call(s: str, i: int) -> bool:
    """Whether the bracket at ``i`` belongs to a name (``f(x)``, ``t[0]``): not an aside."""
    return i > 0 and (s[i - 1].isalnum() or s[i - 1] in "_.)]")


# an aside naming a config key (checks.lr_range.when=always, data.test_loader_fn) is part of
# the fix; one naming a source line (at model.py:12) says where an error happened
_KEPT_ASIDE = re.compile(r"\bchecks\.|\b[a-z_]+\.[a-z_.]+=|\.py:\d")


def _keeps(aside: str) -> bool:
    """An aside worth keeping in a reason: it names a config key or where an error was."""
    return _KEPT_ASIDE.search(aside) is not None


def drop_asides(s: str) -> str:
    """``s`` without its parenthesised asides (a call's parentheses, brackets and asides
    naming a config key stay)."""
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i] == "(" and not _is_call(s, i):
            depth, j = 0, i
            while j < len(s):
                depth += (s[j] in _OPEN) - (s[j] in _CLOSE)
                if depth == 0:
                    break
                j += 1
            aside = s[i : j + 1]
            if not _keeps(aside):
                while out and out[-1] == " ":  # "steps (x, y): " -> "steps: "
                    out.pop()
                i = j + 1
                continue
        out.append(s[i])
        i += 1
    return "".join(out)


def _clause_starts(s: str) -> list[int]:
    """Where each clause after the first begins: after a separator at bracket depth 0."""
    starts, depth = [], 0
    for i, ch in enumerate(s):
        depth += (ch in _OPEN) - (ch in _CLOSE)
        if depth == 0 and s.startswith(_SEPARATORS, i):
            starts.append(i + 2)
    return starts


def _first_clause_end(s: str) -> int:
    starts = _clause_starts(s)
    return starts[0] - 2 if starts else len(s)


def _without_notes(s: str, others: Iterable[str]) -> str:
    """``s`` without a trailing ``; <other check>: ...`` note (it repeats that finding)."""
    for other in others:
        at = s.find(f"; {other}: ")
        if at > 0:
            s = s[:at]
    return s


def _cut(s: str, n: int) -> str:
    """``s`` cut at a word to at most ``n`` characters, ``…`` marking the cut."""
    if len(s) <= n:
        return s
    head = s[: n - 1].rsplit(" ", 1)[0] if " " in s[: n - 1] else s[: n - 1]
    return head.rstrip(",;: ") + "…"


def reason(message: str, budget: int = BUDGET, others: Iterable[str] = ()) -> str:
    """A message as one short line: what is wrong and the fix (see the module doc);
    ``others``: the names of the other checks (their findings are not repeated)."""
    s = _without_notes(drop_asides(" ".join(message.split())), others)
    s = s.rstrip(" .;")
    if len(s) <= budget:
        return s
    starts = _clause_starts(s)
    # the first clause gets what the last one (the fix, at its shortest) leaves; when the
    # fix cannot be whole anyway, what is wrong comes first: up to 3/4 of the budget
    fix = len(s) - starts[-1] if starts else budget
    first = s[: _first_clause_end(s)]
    head_room = budget - len(ELLIPSIS) - fix
    if head_room < len(first):
        head_room = max(budget // 2, min(len(first), budget * 3 // 4))
    head = _cut(first, head_room).removesuffix("…")
    room = budget - len(head) - len(ELLIPSIS)
    tails = [s[i:] for i in starts if i > len(head) and len(s) - i <= room]
    if tails:
        return head + ELLIPSIS + tails[0]
    if starts and room >= MIN_FIX:  # what is wrong whole, the fix as far as it fits
        return head + ELLIPSIS + _cut(s[starts[-1] :], room)
    return _cut(s, budget)


def reason_of(check: CheckResult, report: Report, budget: int = BUDGET) -> str:
    """The ``reason`` of one of ``report``'s checks (notes on the others' findings dropped)."""
    others = [c.name for c in report.checks if c.name != check.name]
    return reason(check.message, budget, others)


def with_values(threshold: str, params: Any) -> str:
    """A threshold's symbolic names with their values: ``ratio in [vanish_ratio,
    explode_ratio]`` -> ``ratio in [vanish_ratio=1e-05, explode_ratio=1e+04]``. Only the
    ``params`` fields whose name has an underscore (a word such as ``lr`` may be prose)
    and whose value is set; each name once."""
    if not threshold or not is_dataclass(params):
        return threshold
    for f in fields(params):
        value = getattr(params, f.name, None)
        if "_" not in f.name or value is None or isinstance(value, dict | list | tuple):
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        pattern = rf"(?<![\w.=])({re.escape(f.name)})(?![\w=])"
        threshold = re.sub(pattern, rf"\1={shown}", threshold, count=1)
    return threshold
