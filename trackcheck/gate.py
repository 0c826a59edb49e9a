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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXIT_PASSED, EXIT_FAILED, EXIT_NOTHING = 0, 1, 2
PASSED, FAILED, ERROR, RUNNING = "passed", "failed", "error", "running"
# check statuses listed as failed (whether warn gated is the report's own verdict)
BAD_CHECK = ("fail", "error")
TRACKER_DIRS = {"mlruns", "wandb"}  # the local stores' folders, skipped by ``dir``


class GateError(Exception):
    """The source could not be read (no such dir, experiment, run): exit 2."""


@dataclass
class RunVerdict:
    run: str  # what a person recognises: the run's name, or the job's folder and overrides
    where: str  # where it lives: an MLflow/W&B run id, or the report.json path
    status: str  # passed | failed | error (crashed, no verdict) | running (no verdict yet)
    failed_checks: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASSED


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
    failed = list(d.get("gated_on", []))
    why = [
        f"{c['name']}: {c.get('message', '')}" for c in d.get("checks", []) if c["name"] in failed
    ]
    return RunVerdict(
        run=name,
        where=str(path),
        status=PASSED if d.get("status") == PASSED else FAILED,
        failed_checks=failed,
        detail="; ".join(why),
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
        if not TRACKER_DIRS & set(p.relative_to(root).parts)
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


# --- MLflow --------------------------------------------------------------------------------------
def _search(client: Any, exp_ids: list[str], filters: Sequence[str]) -> list[Any]:
    """All runs matching every filter (MLflow pages its answers)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            exp_ids, " and ".join(f for f in filters if f), max_results=1000, page_token=token
        )
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _from_mlflow(run: Any) -> RunVerdict:
    tags = run.data.tags
    status = tags.get("trackcheck.status")
    failed = [c for c in tags.get("trackcheck.failed_checks", "").split(",") if c]
    if not failed:  # older runs, or a gate that failed on warnings: read the per-check tags
        failed = [
            k.split(".", 2)[2]
            for k, v in tags.items()
            if k.startswith("trackcheck.check.") and v in BAD_CHECK
        ]
    if status is None:  # a child of the sweep that never got a verdict
        crashed = run.info.status != "RUNNING"
        return RunVerdict(
            run=run.info.run_name or run.info.run_id,
            where=run.info.run_id,
            status=ERROR if crashed else RUNNING,
            detail=f"no trackcheck.status tag; the run is {run.info.status}",
        )
    return RunVerdict(
        run=run.info.run_name or run.info.run_id,
        where=run.info.run_id,
        status=PASSED if status == PASSED else FAILED,
        failed_checks=sorted(failed),
    )


def read_mlflow(
    tracking_uri: str,
    experiment: str | None = None,
    parent_run: str | None = None,
    extra_filter: str = "",
) -> list[RunVerdict]:
    """Runs with a trackcheck verdict in an experiment (by name or id), or a sweep's children.

    In an experiment: the runs whose ``tags.`trackcheck.status``` (the MLflow tracker's
    verdict tag) is passed or failed; the sweeps' parent runs carry no such tag. Under a
    parent run: every child, so one without the tag (a job that crashed or still runs) counts.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    if parent_run:
        try:
            exp_ids = [client.get_run(parent_run).info.experiment_id]
        except Exception as e:  # noqa: BLE001 - MLflow raises its own error types per store
            raise GateError(f"no MLflow run {parent_run} in {tracking_uri}: {e}") from e
        scope = f"tags.`mlflow.parentRunId` = '{parent_run}'"
    else:
        exp = client.get_experiment_by_name(experiment or "trackcheck")
        if exp is None and experiment and experiment.isdigit():
            exp = client.get_experiment(experiment)
        if exp is None:
            raise GateError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
        exp_ids = [exp.experiment_id]
    if parent_run:
        runs = _search(client, exp_ids, [scope, extra_filter])
    else:
        runs = [
            r
            for verdict in (PASSED, FAILED)
            for r in _search(
                client, exp_ids, [f"tags.`trackcheck.status` = '{verdict}'", extra_filter]
            )
        ]
    ordered = sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_name or ""))
    return [_from_mlflow(r) for r in ordered]


# --- W&B -----------------------------------------------------------------------------------------
def wandb_verdict(
    name: str, run_id: str, tags: Iterable[str], summary: Mapping[str, Any], state: str
) -> RunVerdict:
    """One W&B run's verdict from what the W&B tracker writes: summary keys
    ``sanity/passed`` and ``sanity/<check>/status``; tags ``sanity:passed``,
    ``sanity:failed`` and ``sanity:fail:<check>``."""
    tags = list(tags)
    failed = sorted(t.split(":", 2)[2] for t in tags if t.startswith("sanity:fail:"))
    if not failed:  # long check names may not fit W&B's 64-character tags: use the summary
        failed = sorted(
            k.split("/")[1]
            for k, v in summary.items()
            if k.startswith("sanity/") and k.endswith("/status") and v in BAD_CHECK
        )
    passed = summary.get("sanity/passed")
    if passed is None and ("sanity:passed" in tags or "sanity:failed" in tags):
        passed = "sanity:passed" in tags
    if passed is None:
        return RunVerdict(
            run=name,
            where=run_id,
            status=RUNNING if state == "running" else ERROR,
            detail=f"no sanity verdict in the run's summary or tags; the run is {state}",
        )
    return RunVerdict(
        run=name, where=run_id, status=PASSED if bool(passed) else FAILED, failed_checks=failed
    )


def _wandb_cli() -> list[str]:
    """The ``wandb`` script beside this Python (starts faster than ``python -m wandb``)."""
    exe = Path(sys.executable).with_name("wandb")
    found = str(exe) if exe.is_file() else shutil.which("wandb")
    return [found] if found else [sys.executable, "-m", "wandb"]


def _leet(run_dir: Path, *flags: str) -> subprocess.Popen[str]:
    cmd = [*_wandb_cli(), "leet", "inspect", str(run_dir), *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _offline_group(run_dir: Path) -> str:
    """The run's group, from its first ``run`` record; stops reading once it is found."""
    proc = _leet(run_dir, "--json")
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            rec = json.loads(line)
            if rec.get("type") == "run":
                return str(rec["run"].get("run_group", ""))
        return ""
    finally:
        proc.kill()
        proc.wait()


def read_wandb_offline(root: str | Path, group: str | None = None) -> list[RunVerdict]:
    """Offline (or synced) run folders below ``root`` (a ``wandb/`` dir or WANDB_DIR).

    Read with wandb's own reader, ``wandb leet inspect <run_dir> --summary --json``: the
    state, tags and summary the W&B UI would show, with no server.
    """
    root = Path(root)
    if not root.is_dir():
        raise GateError(f"{root} is not a folder")
    verdicts = []
    for log in sorted(root.rglob("run-*.wandb")):
        run_dir = log.parent
        if group is not None and _offline_group(run_dir) != group:
            continue
        out, err = _leet(run_dir, "--summary", "--json").communicate()
        if not out.strip():
            raise GateError(f"wandb leet inspect {run_dir} gave nothing: {err.strip()}")
        s = json.loads(out)
        verdicts.append(
            wandb_verdict(
                s.get("name") or run_dir.name,
                s.get("run_id", run_dir.name),
                s.get("tags") or [],
                s.get("summary") or {},
                s.get("state", ""),
            )
        )
    return verdicts


def read_wandb_online(project: str, group: str, entity: str | None = None) -> list[RunVerdict]:
    """The runs of a W&B group on the server (needs WANDB_API_KEY and the network)."""
    import wandb

    path = f"{entity}/{project}" if entity else project
    try:
        runs = list(wandb.Api(timeout=30).runs(path, filters={"group": group}))
    except Exception as e:  # noqa: BLE001 - no key, no network, no such project
        raise GateError(f"cannot read W&B project {path}: {type(e).__name__}: {e}") from e
    return [wandb_verdict(r.name, r.id, r.tags, dict(r.summary), r.state) for r in runs]


# --- the verdict ---------------------------------------------------------------------------------
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
            mark = "passed" if v.passed else v.status.upper()
            checks = ", ".join(v.failed_checks)
            print(f"  {mark:<8} {v.run}  [{v.where}]" + (f"  failed: {checks}" if checks else ""))
            if v.detail and not v.passed:
                print(f"           {v.detail}")
    if not verdicts:
        print(f"gate: no trackcheck run found in {source}", file=sys.stderr)
        return EXIT_NOTHING
    if bad:
        names = "; ".join(f"{v.run} ({', '.join(v.failed_checks) or v.status})" for v in bad)
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
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db",
    )
    m.add_argument("--experiment", help="name or id (default: trackcheck)")
    m.add_argument("--parent-run", help="a sweep's parent run id (in multirun_report.json)")
    m.add_argument("--filter", default="", help="an extra MLflow filter string, ANDed")
    w = sub.add_parser("wandb", parents=[common], help="a W&B group, offline (--dir) or online")
    w.add_argument("--group", help="the sweep id (W&B group); with --dir, omit for every run")
    w.add_argument("--dir", help="a wandb/ folder holding offline-run-* folders")
    w.add_argument("--project", help="online: the W&B project (needs WANDB_API_KEY)")
    w.add_argument("--entity", help="online: the W&B entity")
    return p


def _read(args: argparse.Namespace) -> tuple[list[RunVerdict], str]:
    if args.source == "dir":
        return read_dir(args.path), args.path
    if args.source == "mlflow":
        where = (
            f"parent run {args.parent_run}"
            if args.parent_run
            else f"experiment {args.experiment or 'trackcheck'}"
        )
        verdicts = read_mlflow(args.tracking_uri, args.experiment, args.parent_run, args.filter)
        return verdicts, f"mlflow {where} in {args.tracking_uri}"
    if args.dir:
        return read_wandb_offline(args.dir, args.group), f"wandb {args.dir} group {args.group}"
    if not (args.project and args.group):
        raise GateError("wandb needs --dir (offline runs) or --project and --group")
    return read_wandb_online(args.project, args.group, args.entity), f"wandb group {args.group}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        verdicts, source = _read(args)
    except GateError as e:
        print(f"trackcheck-gate: error: {e}", file=sys.stderr)
        return EXIT_NOTHING
    return report(verdicts, source, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
