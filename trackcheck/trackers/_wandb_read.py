"""W&B runs read back for the gate: each run's verdict, the checks it failed on and why.

What ``WandbTracker.set_verdict`` wrote is read back: summary keys ``sanity/passed``,
``sanity/failed_checks``, ``sanity/<check>/status`` and ``sanity/<check>/message`` (the
message of a fail/warn/error check), and the tags ``sanity:passed``, ``sanity:failed`` and
``sanity:fail:<check>``. Offline runs are read with wandb's own reader, ``wandb leet inspect``
(no server, no API key); online runs with ``wandb.Api``. Re-exported by ``trackers.wandb``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trackcheck import names
from trackcheck.names import PASSED_KEY
from trackcheck.trackers.base import BAD_CHECK, RunVerdict, TrackerError, explain, split_gated


def _wandb() -> Any:
    try:
        import wandb
    except ImportError as e:
        raise TrackerError("reading W&B runs needs the W&B SDK: pip install wandb") from e
    return wandb


def _gated(tags: list[str], summary: Mapping[str, Any], statuses: dict[str, str]) -> list[str]:
    """The checks the gate failed on: the summary's list (full names), else the tags (cut
    to 64 characters), else the checks whose status is fail or error."""
    listed = str(summary.get(names.FAILED_CHECKS_KEY) or "")
    if listed:
        return sorted(c for c in listed.split(",") if c)
    prefix = names.WANDB_FAIL_TAG_PREFIX
    tagged = sorted(t[len(prefix) :] for t in tags if t.startswith(prefix))
    return tagged or sorted(c for c, v in statuses.items() if v in BAD_CHECK)


def run_verdict(
    name: str, run_id: str, tags: Iterable[str], summary: Mapping[str, Any], state: str
) -> RunVerdict:
    """One W&B run's verdict from what ``set_verdict`` wrote (module docstring). ``state``
    is W&B's own: running, finished, failed, crashed."""
    tags = list(tags)
    statuses = {
        check: str(v)
        for k, v in summary.items()
        if (check := names.check_of_status_key(k)) is not None
    }
    passed = summary.get(PASSED_KEY)
    passed_tag, failed_tag = (names.wandb_verdict_tag(v) for v in (names.PASSED, names.FAILED))
    if passed is None and (passed_tag in tags or failed_tag in tags):
        passed = passed_tag in tags
    if passed is None:
        return RunVerdict(
            run=name,
            where=run_id,
            status=names.RUNNING if state == "running" else names.ERROR,
            detail=f"no sanity verdict in the run's summary or tags; the run is {state}",
        )
    if bool(passed):
        return RunVerdict(run=name, where=run_id, status=names.PASSED)
    failed, warned = split_gated(_gated(tags, summary, statuses), statuses)
    messages = {c: str(summary.get(names.message_key(c)) or "") for c in failed + warned}
    return RunVerdict(
        run=name,
        where=run_id,
        status=names.FAILED,
        failed_checks=failed,
        warned_checks=warned,
        detail=explain(failed + warned, messages),
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


def read_offline_verdicts(root: str | Path, group: str | None = None) -> list[RunVerdict]:
    """Offline (or synced) run folders below ``root`` (a ``wandb/`` dir or WANDB_DIR), those
    of ``group`` only when it is given.

    Read with wandb's own reader, ``wandb leet inspect <run_dir> --summary --json``: the
    state, tags and summary the W&B UI would show, with no server. TrackerError when
    ``root`` is not a folder or the reader gives nothing.
    """
    root = Path(root)
    if not root.is_dir():
        raise TrackerError(f"{root} is not a folder")
    verdicts = []
    for log in sorted(root.rglob("run-*.wandb")):
        run_dir = log.parent
        if group is not None and _offline_group(run_dir) != group:
            continue
        out, err = _leet(run_dir, "--summary", "--json").communicate()
        if not out.strip():
            raise TrackerError(f"wandb leet inspect {run_dir} gave nothing: {err.strip()}")
        s = json.loads(out)
        verdicts.append(
            run_verdict(
                s.get("name") or run_dir.name,
                s.get("run_id", run_dir.name),
                s.get("tags") or [],
                s.get("summary") or {},
                s.get("state", ""),
            )
        )
    return verdicts


def read_online_verdicts(project: str, group: str, entity: str | None = None) -> list[RunVerdict]:
    """The runs of a W&B group on the server (needs WANDB_API_KEY and the network)."""
    wandb = _wandb()
    path = f"{entity}/{project}" if entity else project
    try:
        runs = list(wandb.Api(timeout=30).runs(path, filters={"group": group}))
    except Exception as e:  # noqa: BLE001 - no key, no network, no such project
        raise TrackerError(f"cannot read W&B project {path}: {type(e).__name__}: {e}") from e
    return [run_verdict(r.name, r.id, r.tags, dict(r.summary), r.state) for r in runs]
