"""The gate command: did every sanity run pass? For CI, SLURM job dependencies and scripts.

::

    trackcheck-gate dir multirun/2026-11-26/14-55-33          # report.json files of a sweep
    trackcheck-gate mlflow --parent-run 02c5a3...             # a sweep's MLflow parent run
    trackcheck-gate mlflow --experiment trackcheck --filter "attributes.start_time > 1795700000000"
    trackcheck-gate wandb --dir ./wandb --group trackcheck-20261126-145533-cf59ee   # offline
    trackcheck-gate wandb --project my-proj --group trackcheck-20261126-145533-cf59ee

It prints every run with its verdict and the checks that failed, and exits 0 when all passed,
1 when any run failed (or crashed, or has no verdict yet), 2 when it found no run at all or
could not read the source (a gate that silently passes on a typo would be worse than none).

This module is the verdict and the command line; reading a tracker's runs back is the
tracker's own code (``trackers._mlflow_sweep.read_verdicts``, ``trackers._wandb_read``),
and the keys and tags they read are spelled in ``trackcheck.names``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from trackcheck.names import DEFAULT_EXPERIMENT, DEFAULT_MLFLOW_URI, ERROR, FAILED, PASSED
from trackcheck.trackers import LOCAL_STORE_DIRS, TrackerError, _mlflow_sweep, _wandb_read
from trackcheck.trackers.base import RunVerdict, explain, split_gated

EXIT_PASSED, EXIT_FAILED, EXIT_NOTHING = 0, 1, 2


class GateError(Exception):
    """The source could not be read (no such dir, experiment, run): exit 2."""


# --- a folder of report.json files (a sweep dir, an outputs dir, a CI artifact) ----------------
def _overrides(folder: Path, root: Path) -> str:
    """The Hydra overrides of the job that wrote ``folder`` (it may sit below the job dir)."""
    import yaml

    for d in [folder, *folder.parents]:
        path = d / ".hydra" / "overrides.yaml"
        if path.exists():
            return " ".join(str(o) for o in (yaml.safe_load(path.read_text()) or []))
        if d == root:
            break
    return ""


def _from_report(path: Path, root: Path) -> RunVerdict:
    d = json.loads(path.read_text())
    rel = str(path.parent.relative_to(root))
    name = " ".join(s for s in (rel, _overrides(path.parent, root)) if s)
    checks = d.get("checks", [])
    failed, warned = split_gated(
        list(d.get("gated_on", [])), {c["name"]: c["status"] for c in checks}
    )
    return RunVerdict(
        run=name,
        where=str(path),
        status=PASSED if d.get("status") == PASSED else FAILED,
        failed_checks=failed,
        warned_checks=warned,
        detail=explain(failed + warned, {c["name"]: c.get("message", "") for c in checks}),
    )


def read_dir(root: str | Path) -> list[RunVerdict]:
    """Every ``report.json`` below ``root``, plus every Hydra job dir that has none (crashed)."""
    root = Path(root)
    if not root.is_dir():
        raise GateError(f"{root} is not a folder")
    # the trackers keep copies (mlruns/.../artifacts, wandb/*/files): count each stage once
    reports = [
        p
        for p in sorted(root.rglob("report.json"))
        if not LOCAL_STORE_DIRS & set(p.relative_to(root).parts)
    ]
    verdicts = [_from_report(p, root) for p in reports]
    for hydra_dir in sorted(root.rglob(".hydra")):
        job = hydra_dir.parent
        if not any(p.is_relative_to(job) for p in reports):
            name = (str(job.relative_to(root)), _overrides(job, root))
            verdicts.append(
                RunVerdict(
                    run=" ".join(s for s in name if s),
                    where=str(job),
                    status=ERROR,
                    detail="no report.json: the job stopped before its stage finished "
                    "(see its log; a fail-fast sweep skips the jobs after a failure)",
                )
            )
    return verdicts


# --- the verdict ---------------------------------------------------------------------------------
def _checks(v: RunVerdict, short: bool = False) -> str:
    """``  failed: a, b  warned: c (...)``: a warning that failed the gate is called a
    warning, not a failure. ``short``: ``failed: a, b; warned: c``."""
    parts = [
        (w, ", ".join(cs)) for w, cs in (("failed", v.failed_checks), ("warned", v.warned_checks))
    ]
    if short:
        return "; ".join(f"{w}: {cs}" for w, cs in parts if cs)
    out = "".join(f"  {w}: {cs}" for w, cs in parts if cs)
    if v.warned_checks:
        out += " (a warning fails the gate only with gate.fail_on_warn, as in gate=strict)"
    return out


def report(verdicts: list[RunVerdict], source: str, as_json: bool = False) -> int:
    """Print each run's verdict and the gate's; return the exit code."""
    bad = [v for v in verdicts if not v.passed]
    if as_json:
        print(
            json.dumps(
                {
                    "source": source,
                    "passed": not bad and bool(verdicts),
                    "runs": [asdict(v) for v in verdicts],
                },
                indent=2,
            )
        )
    else:
        print(f"trackcheck-gate: {source}: {len(verdicts)} run(s)")
        for v in verdicts:
            mark = PASSED if v.passed else v.status.upper()
            print(f"  {mark:<8} {v.run}  [{v.where}]{_checks(v)}")
            if v.detail and not v.passed:
                print(f"           {v.detail}")
    if not verdicts:
        print(f"gate: no trackcheck run found in {source}", file=sys.stderr)
        return EXIT_NOTHING
    if bad:
        names = "; ".join(f"{v.run} ({_checks(v, short=True) or v.status})" for v in bad)
        print(f"gate: FAILED: {len(bad)} of {len(verdicts)} run(s): {names}", file=sys.stderr)
        return EXIT_FAILED
    print(f"gate: passed: all {len(verdicts)} run(s)", file=sys.stderr)
    return EXIT_PASSED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trackcheck-gate",
        description="Exit 0 when every trackcheck sanity run in the source passed, 1 when any "
        "failed (or crashed), 2 when none was found.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    sub = p.add_subparsers(dest="source", required=True)
    d = sub.add_parser("dir", parents=[common], help="report.json files below a folder")
    d.add_argument("path", help="a sweep dir (multirun/...), an outputs dir, a CI artifact")
    m = sub.add_parser("mlflow", parents=[common], help="an MLflow experiment or parent run")
    m.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_MLFLOW_URI),
        help=f"default: $MLFLOW_TRACKING_URI, else {DEFAULT_MLFLOW_URI}",
    )
    m.add_argument("--experiment", help=f"name or id (default: {DEFAULT_EXPERIMENT})")
    m.add_argument("--parent-run", help="a sweep's parent run id (in multirun_report.json)")
    m.add_argument("--filter", default="", help="an extra MLflow filter string, ANDed")
    w = sub.add_parser("wandb", parents=[common], help="a W&B group, offline (--dir) or online")
    w.add_argument("--group", help="the sweep id (W&B group); with --dir, omit for every run")
    w.add_argument("--dir", help="a wandb/ folder holding offline-run-* folders")
    w.add_argument("--project", help="online: the W&B project (needs WANDB_API_KEY)")
    w.add_argument("--entity", help="online: the W&B entity")
    return p


def _read(args: argparse.Namespace) -> tuple[list[RunVerdict], str]:
    """The verdicts of the source the arguments name, and how to call that source."""
    if args.source == "dir":
        return read_dir(args.path), args.path
    if args.source == "mlflow":
        where = (
            f"parent run {args.parent_run}"
            if args.parent_run
            else f"experiment {args.experiment or DEFAULT_EXPERIMENT}"
        )
        verdicts = _mlflow_sweep.read_verdicts(
            args.tracking_uri, args.experiment, args.parent_run, args.filter
        )
        return verdicts, f"mlflow {where} in {args.tracking_uri}"
    if args.dir:
        verdicts = _wandb_read.read_offline_verdicts(args.dir, args.group)
        return verdicts, f"wandb {args.dir} group {args.group}"
    if not (args.project and args.group):
        raise GateError("wandb needs --dir (offline runs) or --project and --group")
    verdicts = _wandb_read.read_online_verdicts(args.project, args.group, args.entity)
    return verdicts, f"wandb group {args.group}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        verdicts, source = _read(args)
    except (GateError, TrackerError) as e:  # a tracker's reader could not read the source
        print(f"trackcheck-gate: error: {e}", file=sys.stderr)
        return EXIT_NOTHING
    return report(verdicts, source, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
