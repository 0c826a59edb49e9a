"""A stage's console as a person sees it: run trackcheck in a real terminal (tmux) of a given
size and print the screen it leaves, the last ``--rows`` lines, once it has exited.

    python scripts/console_screen.py -- +model=mlp model._target_=helpers.models.DetachedBody
    python scripts/console_screen.py --cols 120 --out screen.txt -- +model=resnet optim.lr=1e3

The planted bug ``helpers.models.DetachedBody`` lives in tests/helpers/models.py: run from
the repository root (the script puts tests/ on the import path). Runs in a scratch folder
(``--cwd``, default a new temporary one), so outputs/ and mlflow.db land there. Prints the
screen, then ``exit code N`` on the last line. Needs tmux (Debian: ``apt-get install tmux``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def screen(args: list[str], cols: int, rows: int, cwd: Path, timeout: float) -> tuple[str, int]:
    """Run ``python -m trackcheck ARGS`` in a detached tmux window of ``cols`` x ``rows``;
    the screen once it exited, and its exit code."""
    session = f"trackcheck-screen-{uuid.uuid4().hex[:8]}"
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = {"PYTHONPATH": path.rstrip(os.pathsep), "OMP_NUM_THREADS": "1", "TERM": "xterm-256color"}
    command = " ".join(
        [
            *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
            shlex.quote(sys.executable),
            "-m trackcheck",
            *map(shlex.quote, args),
        ]
    )
    # the exit code to a file, then the pane waits (killed below) so its screen stays
    status = cwd / f".exit-{session}"
    command += f"; echo $? > {shlex.quote(str(status))}; sleep 3600"
    size = ["-x", str(cols), "-y", str(rows)]
    tmux("new-session", "-d", "-s", session, *size, "-c", str(cwd), command)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if status.is_file() and status.read_text().strip():
                code = status.read_text().strip()
                status.unlink()
                # the visible screen only (no scrollback): what is on it without scrolling
                text = tmux("capture-pane", "-p", "-t", session)
                return text.rstrip("\n"), int(code)
            time.sleep(0.5)
        raise TimeoutError(f"trackcheck did not exit within {timeout:.0f} s")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cols", type=int, default=80)
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--cwd", type=Path, default=None, help="where the stage runs")
    ap.add_argument("--out", type=Path, default=None, help="also write the screen here")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("args", nargs="*", help="trackcheck's arguments (after --)")
    a = ap.parse_args()
    cwd = a.cwd or Path(tempfile.mkdtemp(prefix="trackcheck-screen-"))
    cwd.mkdir(parents=True, exist_ok=True)
    text, code = screen(a.args, a.cols, a.rows, cwd, a.timeout)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)
    print(f"exit code {code} (ran in {cwd})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
