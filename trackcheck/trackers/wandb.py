"""Weights & Biases backend: a run per stage (or the caller's active run), never a prompt.

What a person sees in the W&B workspace (keys from ``trackers.base``). Panels, in a section
per check: W&B sections panels by the key's first segment, so they are named
``sanity-<check>/<name>`` (``panel_key``), and the overview sits in ``sanity``:
- each check's series, ``sanity-<check>/<series>``, plotted against the check's own x-axis
  ``sanity-<check>/step`` (``define_metric(step_metric=...)``; the run's global step is
  never used, since W&B silently drops a row logged below the current step); a check's
  series that measure one thing (``trackers.base.compared``) also drawn together, one
  multi-series line chart ``sanity-<check>/<word>_compared``; its figures (``wandb.Image``)
  and tables;
- the summary table (``sanity/summary``: check, status, value, threshold, message), the
  table of every other number (``sanity/metrics``: check, metric, value), the HTML report
  (``sanity/report``, ``wandb.Html``).
Not panels, the run summary (the runs table's columns, the run's overview): each check's
value ``sanity/value/<check>``, every check's other numbers (``sanity/<check>/<metric>``,
``.../duration_s``), ``sanity/<check>/status``, a fail/warn/error check's
``sanity/<check>/message``, ``sanity/passed``, ``sanity/status``, ``sanity/failed_checks``;
and:
- tags ``sanity:passed`` / ``sanity:failed`` and ``sanity:fail:<check>``; the run ends
  ``failed`` (``finish(exit_code=1)``) when the gate fails;
- the run's notes: the verdict and each finding's reason (``notes_text``); online, a failed
  gate also sends a W&B alert (``run.alert``: e-mail or Slack, as the user set them up);
- the stage's console output, in the run's Logs tab (``console="wrap"``).

Offline fallback (``mode: auto``): no API key, or the server cannot be reached, or
``wandb.init`` fails or times out -> the run is written offline to ``wandb/offline-run-*``
and one line says how to upload it (``wandb sync <dir>``). W&B's own console output and
system-metrics sampling are switched off (the stage's own lines are captured); with no
credentials nothing ever asks for a key.

Attached (the caller's script already has a run): the stage logs into that run without
moving its step counter: series become line charts over a table (one per series), and
everything goes into ONE uncommitted row (``log(..., commit=False)``) that the caller's next
``log`` commits at the caller's step. (Logging rows with a ``step_metric`` would still add
one ``_step`` per row, and the caller's next ``log(step=k)`` below that is dropped.)

A sweep's grouping is ``sweep_job_args``. Reading verdicts back for the gate command,
offline with wandb's own reader (``read_offline_verdicts``) or from the server
(``read_online_verdicts``), lives beside this module in ``trackers._wandb_read``.
"""

from __future__ import annotations

import math
import netrc
import os
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trackcheck import gist, names
from trackcheck.core import Report
from trackcheck.names import PASSED_KEY, RunStatus
from trackcheck.redact import redact_args

# re-exported: the gate and the tests import the readers from here
from trackcheck.trackers.base import EXPLAINED, FileKind, TrackerError, compared, scalars

DEFAULT_BASE_URL = "https://api.wandb.ai"
# W&B has no "killed" state: an interrupt ends the run failed with the shell's SIGINT code
EXIT_CODES: dict[str, int] = {names.RUN_FINISHED: 0, names.RUN_FAILED: 1, names.RUN_KILLED: 130}
# ids of runs this process opened: an open one found later is a stale multirun job of ours,
# finished by reinit="finish_previous", never attached to
_OWN_RUN_IDS: set[str] = set()


def _wandb() -> Any:
    try:
        import wandb
    except ImportError as e:
        raise TrackerError(
            "tracker=wandb needs the W&B SDK: pip install wandb "
            "(or use tracker=mlflow or tracker=none)"
        ) from e
    return wandb


def find_credentials(base_url: str = DEFAULT_BASE_URL) -> str | None:
    """Where a W&B API key would come from (env or ~/.netrc), or None; never prompts."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(var):
            return var
    host = urlsplit(base_url).hostname or ""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        if os.path.isfile(path) and netrc.netrc(path).authenticators(host):
            return path
    except (OSError, netrc.NetrcParseError):
        pass
    return None


def unreachable(base_url: str, timeout: float) -> str | None:
    """Why ``base_url`` cannot be reached by TCP within ``timeout`` seconds, or None.

    Behind an HTTP(S) proxy a direct connection says nothing: then wandb.init's own
    ``init_timeout`` bounds the wait instead.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
    except OSError as e:
        return f"cannot reach {base_url}: {e}"
    return None


@contextmanager
def scrubbed_argv() -> Iterator[None]:
    """``sys.argv`` without secrets while ``wandb.init`` reads it: W&B records the command
    line in the run's metadata (the ``.wandb`` log that ``wandb sync`` uploads), and
    ``+model.api_key=...`` or ``postgresql://user:password@...`` must not be in it. The
    program and the rest of the arguments stay, so the run still says how it was started."""
    original = sys.argv
    sys.argv = [*original[:1], *redact_args(original[1:])]
    try:
        yield
    finally:
        sys.argv = original


def _short_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def notes_text(report: Report) -> str:
    """The run's notes (the Overview's description, the runs table's Notes column): the
    verdict, one line per finding (failures first) with its reason (``trackcheck.gist``),
    and where every message is whole."""
    lines = [gist.verdict_line(report)]
    lines += [
        f"{c.status.value} {c.name}: {gist.reason_of(c, report)}" for c in gist.findings(report)
    ]
    lines.append(f"Every message, number and figure: the {names.REPORT_KEY} panel (report.html)")
    return "\n".join(lines)


class WandbTracker:
    """Log the sanity stage to W&B (``tracker=wandb``).

    ``mode``: ``auto`` (online when an API key is found and the server answers, else
    offline; WANDB_MODE, when set, decides), ``online`` (fails instead of falling back),
    ``offline``, ``disabled``. ``settings``: extra ``wandb.Settings`` fields.

    Example (a stage logged offline under ./wandb; ``wandb sync`` uploads it later)::

        import trackcheck
        from trackcheck.data import digits
        from trackcheck.models import ResNet
        from trackcheck.trackers.wandb import WandbTracker

        tracker = WandbTracker(project="my-project", group="lr-sweep", mode="offline", dir=".")
        report = trackcheck.run(
            lambda: ResNet([1, 8, 8], 10), digits(), checks=["loss_at_init"], tracker=tracker
        )
        print(report.status, report.tracker["run_dir"])  # passed wandb/offline-run-...
    """

    def __init__(
        self,
        project: str | None = names.DEFAULT_EXPERIMENT,
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = names.WANDB_JOB_TYPE,
        tags: Sequence[str] = (),
        name: str | None = None,
        notes: str | None = None,
        mode: str = "auto",
        dir: str | None = None,
        init_timeout: float = 60.0,
        probe_timeout: float = 3.0,
        attach: bool = True,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ("auto", "online", "offline", "disabled"):
            raise ValueError(f"tracker.mode={mode!r}: expected auto, online, offline or disabled")
        self.project, self.entity, self.group, self.job_type = project, entity, group, job_type
        self.tags = [names.wandb_tag(str(t)) for t in tags]
        self.name, self.notes, self.mode, self.dir = name, notes, mode, dir
        self.init_timeout, self.probe_timeout = init_timeout, probe_timeout
        self.attach = attach
        self.settings = dict(settings or {})
        self.attached = False
        self.offline_reason = ""  # why the run is offline, printed with the sync command
        self.run: Any = None
        self._row: dict[str, Any] = {}  # media, tables, scalars: written as one row

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, config: dict[str, Any], run_name: str) -> None:
        wandb = _wandb()
        active = wandb.run
        if self.attach and active is not None and active.id not in _OWN_RUN_IDS:
            self.run, self.attached = active, True
            if config:
                self.run.config.update({names.PREFIX: config}, allow_val_change=True)
            return
        mode = self._mode()
        if mode == "online":
            self.run = self._init(wandb, "online", config, run_name)
        elif mode == "auto":
            self.offline_reason = self._offline_reason()
            if not self.offline_reason:
                try:
                    self.run = self._init(wandb, "online", config, run_name)
                except Exception as e:  # noqa: BLE001 - any failure online: keep the results
                    self.offline_reason = f"wandb.init failed: {type(e).__name__}: {e}"
                    self.offline_reason = self.offline_reason.splitlines()[0]
            if self.run is None:
                self.run = self._init(wandb, "offline", config, run_name)
        else:  # offline or disabled, asked for by tracker.mode or by WANDB_MODE
            asked = (
                f"mode={mode}" if self.mode != "auto" else f"WANDB_MODE={os.environ['WANDB_MODE']}"
            )
            self.offline_reason = asked
            self.run = self._init(wandb, mode, config, run_name)
        _OWN_RUN_IDS.add(self.run.id)

    def _mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        env = os.environ.get("WANDB_MODE", "").lower()
        return {
            "offline": "offline",
            "dryrun": "offline",
            "disabled": "disabled",
            "online": "online",
            "run": "online",
        }.get(env, "auto")

    def _base_url(self) -> str:
        return str(
            self.settings.get("base_url") or os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
        )

    def _offline_reason(self) -> str:
        if find_credentials(self._base_url()) is None:
            return "no W&B API key: set WANDB_API_KEY or run `wandb login`"
        return unreachable(self._base_url(), self.probe_timeout) or ""

    def _init(self, wandb: Any, mode: str, config: dict[str, Any], run_name: str) -> Any:
        if mode == "online" and find_credentials(self._base_url()) is None:
            # wandb.init would prompt for a key on a terminal and hang a CI job without one
            raise TrackerError(
                "tracker.mode=online but no W&B API key was found: set WANDB_API_KEY or run "
                "`wandb login`, or use tracker.mode=auto to fall back to offline"
            )
        settings = {
            "silent": True,  # our one line says where the run is; no banner, no prompt
            # the stage's console (its lines, the verdict, the reasons) in the run's Logs
            # tab; "wrap" patches sys.stdout/stderr's write (no PTY, no thread of its own)
            "console": "wrap",
            "x_disable_stats": True,  # no system-metrics sampler competing with the checks
            "init_timeout": self.init_timeout,
            **self.settings,
        }
        # a foreign run stays open when attach=False; a stale one of ours is finished
        foreign = wandb.run is not None and wandb.run.id not in _OWN_RUN_IDS
        with scrubbed_argv():  # W&B records sys.argv in the run
            return wandb.init(
                project=self.project,
                entity=self.entity,
                group=self.group,
                job_type=self.job_type,
                tags=self.tags,
                name=self.name or run_name,
                notes=self.notes,
                config=config,
                dir=self.dir,
                mode=mode,
                reinit="create_new" if foreign else "finish_previous",
                settings=wandb.Settings(**settings),
            )

    def finish(self, status: RunStatus) -> None:
        if self.run is None:
            return
        try:
            self._flush()
        finally:  # a row that cannot be written still lets our run end
            if not self.attached:
                _OWN_RUN_IDS.discard(self.run.id)
                self.run.finish(exit_code=EXIT_CODES[status])
        if self.attached:  # the caller's run: they finish it
            print(
                f"wandb: sanity stage {status.lower()}, logged into the active run {self.run.id}",
                file=sys.stderr,
            )
            return
        line = self._where()
        if line:
            print(line, file=sys.stderr)

    @property
    def _disabled(self) -> bool:
        return str(self.run.settings.mode) == "disabled"

    def _where(self) -> str:
        """One line: the run's URL, or its offline folder and the command that uploads it."""
        if self._disabled:
            return ""
        if self.run.offline:
            folder = _short_path(str(self.run.settings.sync_dir))
            return (
                f"wandb: offline ({self.offline_reason}); run saved in {folder}; "
                f"upload it with: wandb sync {folder}"
            )
        return f"wandb: run {self.run.url} (report.html: its {names.REPORT_KEY} panel)"

    # --- logging --------------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float]) -> None:
        # single numbers go to the run summary (the runs table's columns, the Overview), never
        # to the history: W&B draws a panel for every history key, and a one-point chart per
        # check buried the curves. The verdict is a summary bool, written by set_verdict.
        self.run.summary.update({k: v for k, v in metrics.items() if k != PASSED_KEY})

    def log_series(self, series: dict[str, list[tuple[int, float]]], step_key: str) -> None:
        together = _together(series)
        if self.attached:
            self._add_charts(series)
            self._row.update(together)
            return
        step = panel_key(step_key)
        self.run.define_metric(step, hidden=True)
        for key in series:
            self.run.define_metric(panel_key(key), step_metric=step)
        # one row per step, all of this check's series side by side: {step_key: s, key: v}
        rows: dict[int, dict[str, float]] = {}
        for key, points in series.items():
            for s, v in points:
                rows.setdefault(int(s), {step: int(s)})[panel_key(key)] = float(v)
        for s in sorted(rows):
            self.run.log(rows[s])
        self._row.update(together)

    def _add_charts(self, series: dict[str, list[tuple[int, float]]]) -> None:
        """A line chart over a (step, value) table per series: no history rows at all."""
        wandb = _wandb()
        for key, points in series.items():
            leaf = key.rsplit("/", 1)[-1]
            table = wandb.Table(
                columns=["step", leaf], data=[[int(s), float(v)] for s, v in points]
            )
            self._row[panel_key(key)] = wandb.plot.line(table, "step", leaf, title=key)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self._row[panel_key(key)] = _wandb().Table(
            columns=columns, data=rows, allow_mixed_types=True
        )

    def log_file(self, key: str, path: Path, kind: FileKind = "file") -> None:
        if kind == "image":
            self._row[panel_key(key)] = _wandb().Image(str(path))
        elif kind == "html":
            # inject=False: our page keeps its own CSS
            self._row[panel_key(key)] = _wandb().Html(str(path), inject=False)
        elif not self._disabled:
            # a copy inside the run's folder (a file outside it would be symlinked, and lost
            # from an offline run if the output dir moves before `wandb sync`)
            dest = Path(self.run.dir) / f"{key}{path.suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
            self.run.save(str(dest), base_path=self.run.dir, policy="now")

    def _flush(self) -> None:
        if self._row:
            row, self._row = self._row, {}
            self.run.log(row, commit=not self.attached)

    def set_verdict(self, report: Report) -> None:
        self._flush()
        self.run.summary.update(
            {
                # every other number: in the runs table and the run's overview, not charted
                **scalars(report),
                **{names.status_key(c.name): c.status.value for c in report.checks},
                **{
                    names.message_key(c.name): c.message
                    for c in report.checks
                    if c.status.value in EXPLAINED
                },
                PASSED_KEY: report.passed,
                names.STATUS_KEY: report.status,
                names.FAILED_CHECKS_KEY: ",".join(report.gated_on),
            }
        )
        verdict = [names.wandb_verdict_tag(report.status)]
        verdict += [names.wandb_fail_tag(name) for name in report.gated_on]
        kept = [t for t in self.run.tags or () if not t.startswith(names.WANDB_TAG_PREFIX)]
        self.run.tags = tuple(kept + verdict)
        if self.attached:  # the caller's notes and alerts are theirs
            return
        summary = notes_text(report)
        self.run.notes = f"{self.notes}\n\n{summary}" if self.notes else summary
        if not report.passed and not self.run.offline and not self._disabled:
            self._alert(report, summary)

    def _alert(self, report: Report, text: str) -> None:
        """A W&B alert (e-mail, Slack, as the user set them up) on a failed gate, online
        only; one that cannot be sent is said in one line and the stage goes on."""
        wandb = _wandb()
        try:
            self.run.alert(
                title=f"trackcheck: FAILED in {self.run.name}"[:64],
                text=text,
                level=wandb.AlertLevel.ERROR,
            )
        except Exception as e:  # noqa: BLE001 - an alert is a courtesy, not the verdict
            print(f"wandb: the alert could not be sent: {type(e).__name__}: {e}", file=sys.stderr)

    def activate(self) -> AbstractContextManager[None]:
        """Nothing to do: ``wandb.init`` (or the caller) already made this run ``wandb.run``."""
        return nullcontext()

    @staticmethod
    def has_active_run() -> bool:
        """Whether the caller's code has a W&B run open (never imports W&B itself)."""
        wandb: Any = sys.modules.get("wandb")
        return wandb is not None and getattr(wandb, "run", None) is not None

    def info(self) -> dict[str, Any]:
        if self.run is None:
            return {"backend": names.BACKEND_WANDB}
        out: dict[str, Any] = {
            "backend": names.BACKEND_WANDB,
            "run_id": self.run.id,
            "project": self.run.project,
            "attached": self.attached,
            "mode": self.run.settings.mode,
        }
        if self.run.offline:
            folder = str(self.run.settings.sync_dir)
            out.update(run_dir=folder, sync=f"wandb sync {folder}", offline=self.offline_reason)
        else:
            out["url"] = self.run.url
        return out


# --- panels: a section per check ------------------------------------------------------------
def panel_key(key: str) -> str:
    """The history key of a panel: ``sanity/<check>/<name>`` -> ``sanity-<check>/<name>``.
    W&B puts a run's panels in sections by the key's first segment, so each check's curves,
    figures and tables get a section of their own (``sanity-gradient_flow``) and the
    overview (``sanity/summary``, ``sanity/metrics``, ``sanity/report``) stays in ``sanity``.
    Summary keys (``sanity/<check>/status``, the numbers) keep the shared names."""
    parts = key.split("/", 2)
    if len(parts) == 3 and parts[0] == names.PREFIX:
        return f"{names.PREFIX}-{parts[1]}/{parts[2]}"
    return key


def _together(series: dict[str, list[tuple[int, float]]]) -> dict[str, Any]:
    """One multi-series line chart of a check's series that measure the same thing
    (``trackers.base.compared``: real vs blanked inputs, run 1 vs run 2), so the comparison
    the check makes is one panel, ``sanity-<check>/<word>_compared``; {} for a check with
    one series or unlike ones. Non-finite points are left out (a chart cannot draw them)."""
    word = compared(series)
    if word is None:
        return {}
    first = next(iter(series))
    key = panel_key(f"{first.rsplit('/', 1)[0]}/{word}_compared")
    kept = {k: [(s, v) for s, v in pts if math.isfinite(v)] for k, pts in series.items()}
    chart = _wandb().plot.line_series(
        xs=[[s for s, _ in pts] for pts in kept.values()],
        ys=[[v for _, v in pts] for pts in kept.values()],
        keys=[k.rsplit("/", 1)[-1] for k in kept],
        title=f"{first.split('/')[1]}: {word}",
        xname="step",
    )
    return {key: chart}


# --- sweeps: a group per sweep -------------------------------------------------------------
def sweep_job_args(node: Mapping[str, Any], sweep_id: str) -> dict[str, Any]:
    """A job's WandbTracker arguments: ``group`` = the sweep id and ``job_type`` = ``sanity``,
    each unless the config sets it."""
    args = {"group": sweep_id, "job_type": names.WANDB_JOB_TYPE}
    return {k: v for k, v in args.items() if not node.get(k)}
