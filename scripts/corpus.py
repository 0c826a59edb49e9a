"""Run the false-alarm corpus (tests/corpus: correct programs re-implemented from official
examples) through the full checklist and print a table program x check -> status.

    python scripts/corpus.py                      # every program, seed 0
    python scripts/corpus.py --seeds 0 1 2 --only pt_mnist,tut_cifar

trackcheck is imported from PYTHONPATH first, so another checkout can be measured against
this corpus: ``cd OTHER && PYTHONPATH=$PWD:/path/to/this/repo python
/path/to/this/repo/scripts/corpus.py``. No tracker; each run's report goes to a temporary
directory that is removed (trackcheck has no switch to skip figures: they are drawn).
The summary line: runs, runs with any fail or error (a run trackcheck refused counts), rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _path_after_pythonpath() -> None:
    """This repo's tests/ (the corpus package) and root go after the PYTHONPATH entries (so
    a colleague's trackcheck on PYTHONPATH wins) but before site-packages (so an installed
    copy elsewhere does not)."""
    here = str(Path(__file__).resolve().parent)  # scripts/: its corpus.py would shadow the package
    sys.path[:] = [e for e in sys.path if os.path.abspath(e or ".") != here]
    given = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    at = 0
    for i, entry in enumerate(sys.path):
        if os.path.abspath(entry or ".") in given:
            at = i + 1
    for entry in (str(ROOT), str(ROOT / "tests")):
        if entry not in sys.path:
            sys.path.insert(at, entry)


ABBREV = {"pass": ".", "skip": "-", "warn": "w", "fail": "F", "error": "E"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", default="", help="comma-separated program names")
    ap.add_argument("--checks", default="all", help="all, fast, or comma-separated checks")
    ap.add_argument("--quiet", action="store_true", help="no fail/error messages")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    _path_after_pythonpath()
    os.environ.setdefault("MPLBACKEND", "Agg")
    import warnings

    warnings.filterwarnings("ignore", message="enable_nested_tensor")  # the originals' choice
    import torch

    torch.set_num_threads(args.threads)
    import corpus
    from corpus._run import run_program

    import trackcheck

    print(f"trackcheck from {Path(trackcheck.__file__).parent}", flush=True)
    names = corpus.names()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(f"unknown program(s) {unknown}; available: {', '.join(names)}", file=sys.stderr)
            return 2
        names = wanted
    checks = args.checks if args.checks in ("all", "fast") else args.checks.split(",")
    outcomes = []
    t0 = time.perf_counter()
    for name in names:
        for seed in args.seeds:
            o = run_program(name, seed, checks)
            outcomes.append(o)
            flag = "FAIL" if o.failed else "ok"
            slowest = sorted(o.durations.items(), key=lambda kv: -kv[1])[:3]
            where = ", ".join(f"{c} {t:.1f}" for c, t in slowest)
            print(f"  {name} seed {seed}: {flag} ({o.seconds:.1f} s; slowest: {where})", flush=True)
            if o.failed and not args.quiet:
                print("    " + o.explain().replace("\n", "\n    "), flush=True)
    total = time.perf_counter() - t0
    cols: list[str] = []
    for o in outcomes:
        cols += [c for c in o.statuses if c not in cols]
    width = max(len(f"{o.program} s{o.seed}") for o in outcomes) + 1
    print("\nstatus: . pass, w warn, F fail, E error, - skip, X run raised; columns:")
    for i, c in enumerate(cols):
        print(f"  {i:2d} {c}")
    print(" " * width + " ".join(f"{i:2d}" for i in range(len(cols))))
    for o in outcomes:
        row = " ".join(
            f"{'X' if o.crash else ABBREV.get(o.statuses.get(c, ''), '?'):>2}" for c in cols
        )
        print(f"{o.program + ' s' + str(o.seed):<{width}}{row}")
    bad = [o for o in outcomes if o.failed]
    per_check = {c: sum(o.statuses.get(c) in ("fail", "error") for o in outcomes) for c in cols}
    counts = ", ".join(f"{c} {n}" for c, n in sorted(per_check.items(), key=lambda kv: -kv[1]) if n)
    crashed = sum(bool(o.crash) for o in outcomes)
    print(
        f"\nfail/error by check: {counts or 'none'}"
        + (f"; runs that raised: {crashed}" if crashed else "")
    )
    rate = len(bad) / len(outcomes) if outcomes else 0.0
    print(
        f"runs {len(outcomes)}, runs with any fail/error {len(bad)}, rate {rate:.1%} "
        f"({total:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
