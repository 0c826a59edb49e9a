"""Run every shell command in the ```bash blocks of README.md and docs/*.md and compare its
exit code.

    python scripts/check_readme.py                 # run them all, in one fresh temp dir
    python scripts/check_readme.py --list          # what would run, and what is skipped
    python scripts/check_readme.py --only trackcheck --json

Each logical line of a ```bash block (``\\`` continuations joined, comment-only lines
dropped) is one command, run with ``bash -c`` in a temporary working directory that all
commands share (a later command sees an earlier one's ``outputs/`` and ``mlflow.db``), with
the caller's environment (``MLFLOW_TRACKING_URI`` removed, so the default store is used).
Expected exit code: 0, unless an HTML comment on the line right before the block's opening
fence says otherwise:

    <!-- check_readme: exit 1 -->      every command of the block must exit 1
    <!-- check_readme: skip installs -->   the block is not run (say why after "skip"):
                                       installs, servers, cluster launches, placeholders
                                       such as <date> or my_pkg

The pages run in order, README.md first, then docs/ by name. Exit code 0 when every command
that ran exited as expected, 1 otherwise, 2 when the pages hold no runnable command.
tests/test_readme.py checks the cheap part on every test run: each ``python -m trackcheck``
command in them composes with Hydra.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def pages(root: Path = ROOT) -> list[Path]:
    """The pages whose commands are checked: README.md, then docs/*.md by name."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


MARKER = re.compile(r"<!--\s*check_readme:\s*(skip|exit)\s*(.*?)\s*-->")
FENCE = re.compile(r"^\s*```(\w*)\s*$")
TIMEOUT_S = 900  # a sweep of three resnet stages on a loaded 2-core machine


@dataclass
class Command:
    line: int  # 1-based line of the command in its page
    text: str
    expect: int | None  # None: skipped
    why_skipped: str = ""
    page: str = "README.md"  # the page, relative to the repository root

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Outcome:
    command: Command
    code: int | None = None  # None: skipped, or killed by the timeout
    seconds: float = 0.0
    tail: str = ""  # the last lines of its output, when it did not exit as expected

    @property
    def ok(self) -> bool:
        return self.command.expect is None or self.code == self.command.expect


def _logical_lines(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(first line number, text) with backslash continuations joined, comment lines gone."""
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for no, raw in lines:
        if not buf:
            start = no
        part = raw.strip() if buf else raw.rstrip()  # a continuation's indent is layout
        if part.endswith("\\"):
            buf += part[:-1].rstrip() + " "
            continue
        text, buf = (buf + part).strip(), ""
        if text and not text.startswith("#"):
            out.append((start, text))
    return out


def bash_blocks(text: str) -> list[tuple[str, list[tuple[int, str]]]]:
    """Every ```bash block as (marker comment before it or '', [(line number, line)])."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        j = i + 1
        while j < len(lines) and not FENCE.match(lines[j]):
            j += 1
        if lang == "bash":
            before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
            body = [(k + 1, lines[k]) for k in range(start + 1, j)]
            blocks.append((before.strip(), body))
        i = j + 1
    return blocks


def commands(text: str, page: str = "README.md") -> list[Command]:
    """A page's commands with their expected exit codes (None: skipped)."""
    out = []
    for before, body in bash_blocks(text):
        m = MARKER.search(before)
        kind, arg = (m.group(1), m.group(2)) if m else ("exit", "0")
        for no, cmd in _logical_lines(body):
            if kind == "skip":
                out.append(Command(no, cmd, None, arg or "marked skip", page))
            else:
                out.append(Command(no, cmd, int(arg or 0), page=page))
    return out


def all_commands(paths: list[Path], root: Path = ROOT) -> list[Command]:
    """The commands of every page in ``paths``, in order."""
    out = []
    for path in paths:
        page = path.resolve().relative_to(root).as_posix() if path.is_absolute() else str(path)
        out += commands(path.read_text(encoding="utf-8"), page)
    return out


def run(cmd: Command, cwd: Path, timeout: float) -> Outcome:
    if cmd.expect is None:
        return Outcome(cmd)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            ["bash", "-c", cmd.text],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        code, output = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        code, output = None, f"timed out after {timeout:.0f}s: {err or ''}"
    out = Outcome(cmd, code, time.perf_counter() - t0)
    if not out.ok:
        out.tail = "\n".join(str(output).strip().splitlines()[-8:])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--page", type=Path, action="append", help="check only this page (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--only", default="", help="run only commands containing this text")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per command")
    ap.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    args = ap.parse_args()
    paths = [p.resolve() for p in args.page] if args.page else pages()
    cmds = [c for c in all_commands(paths) if args.only in c.text]
    if args.list:
        for c in cmds:
            what = f"skip ({c.why_skipped})" if c.expect is None else f"exit {c.expect}"
            print(f"{c.where}: [{what}] {c.text}")
        return
    if not any(c.expect is not None for c in cmds):
        print("check_readme: no runnable command found", file=sys.stderr)
        sys.exit(2)
    with tempfile.TemporaryDirectory(prefix="check-readme-") as d:
        outcomes = []
        for c in cmds:
            outcomes.append(o := run(c, Path(d), args.timeout))
            if not args.json:
                _print(o)
    if args.json:
        print(json.dumps([{**asdict(o), "ok": o.ok} for o in outcomes], indent=1))
    ran = [o for o in outcomes if o.command.expect is not None]
    bad = [o for o in ran if not o.ok]
    skipped = len(outcomes) - len(ran)
    print(f"check_readme: {len(ran) - len(bad)}/{len(ran)} as expected, {skipped} skipped")
    sys.exit(1 if bad else 0)


def _print(o: Outcome) -> None:
    c = o.command
    if c.expect is None:
        print(f"SKIP  {c.where}: {c.text}  ({c.why_skipped})")
        return
    verdict = "ok  " if o.ok else "FAIL"
    print(f"{verdict}  {c.where}: exit {o.code} (expected {c.expect}, {o.seconds:.0f}s)")
    print(f"      {c.text}")
    if o.tail:
        print("      | " + o.tail.replace("\n", "\n      | "))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
