"""Sanity runs as a person sees them in MLflow's own UI: screenshots from headless Chromium.

    python scripts/mlflow_screenshots.py --out /tmp/screens
    python scripts/mlflow_screenshots.py --out /tmp/screens --store ./work   # keep the store

1. Makes a store (unless ``--store`` already holds one): a 2-job sweep of resnet on digits,
   ``python -m trackcheck -m +model=resnet seed=1,2``, and one run with a planted bug
   (``optim.lr=1e3``: the steps diverge, so six checks fail).
2. Starts ``mlflow ui`` on 127.0.0.1 (a free port) on that store.
3. Opens, in MLflow's classic view (``?workflowType=machine_learning``), and saves as PNG:
   ``run_list.png`` (the runs, the sweep expanded, the ``trackcheck.status`` and
   ``trackcheck.failed_checks`` tags added as columns the way docs/trackers.md says: Columns ->
   search -> tick), ``run_overview.png`` (the failing run: description, tags),
   ``run_overview_passed.png`` (a sweep job's), ``run_report_link.png`` (the description's
   report.html link, followed), ``sweep_overview.png`` (the sweep's parent run),
   ``run_metrics.png`` (its Model metrics tab: the checks' curves, a section per check, no
   one-point chart), ``run_figure.png`` (gradient_flow's figure among the
   artifacts) and ``report_html.png`` (the report.html artifact).

Each page is waited for until what it must show is there (the run names, the verdict
column, the description's verdict line, a curve's chart); exit 1 names what never showed.
Look at the PNGs: that is the point.

Needs Playwright for Python (``pip install playwright``; not a trackcheck dependency, and
its own browser download is not needed) and Chromium (Debian: ``apt-get install
chromium``, /usr/bin/chromium; elsewhere ``--chromium PATH``).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VIEWPORT: Any = {"width": 1400, "height": 1000}  # Playwright's ViewportSize
ML_VIEW = "workflowType=machine_learning"  # trackcheck.names.MLFLOW_ML_VIEW
TAG_COLUMNS = ("trackcheck.status", "trackcheck.failed_checks")
HIDDEN_COLUMNS = ("Dataset", "Source", "Models")  # empty for these runs: room for the tags
# the UI's first-visit extras that cover a third of the page (its assistant panel)
QUIET_UI = """
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""
WAIT_MS = 60_000  # a page's content on a busy 2-core machine


def trackcheck(work: Path, *args: str, multirun: bool = False) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "trackcheck", *(["-m"] if multirun else [])]
    cmd += ["+model=resnet", "progress=false", *args]
    cmd.append(f"tracker.tracking_uri=sqlite:///{work / 'mlflow.db'}")
    print("$", " ".join(cmd), flush=True)
    with (work / "trackcheck.log").open("a") as log:
        return subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=log).returncode


def make_store(work: Path) -> None:
    """Two sweep jobs that pass and one run that fails (exit 1 is that run's verdict)."""
    sweep = trackcheck(work, "seed=1,2", f"hydra.sweep.dir={work / 'multirun'}", multirun=True)
    bug = trackcheck(work, "optim.lr=1e3", f"hydra.run.dir={work / 'bug'}")
    if (sweep, bug) != (0, 1):
        sys.exit(f"trackcheck exited {sweep} (sweep), {bug} (bug); see {work}/trackcheck.log")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_ui(work: Path) -> Iterator[str]:
    """``mlflow ui`` on the store, on a free local port; stopped (its process group) after."""
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", f"sqlite:///{work / 'mlflow.db'}", "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log = (work / "mlflow_ui.log").open("w")
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"mlflow ui did not start; see {work}/mlflow_ui.log")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the CLI and its uvicorn worker
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def runs(work: Path) -> tuple[str, Any, Any]:
    """(experiment id, a sweep job's run, the failing run)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("trackcheck")
    if exp is None:
        sys.exit(f"no experiment trackcheck in {work}/mlflow.db")
    found = client.search_runs([exp.experiment_id], "tags.`trackcheck.status` != ''")
    failed = [r for r in found if r.data.tags["trackcheck.status"] == "failed"]
    passed = [r for r in found if r.data.tags["trackcheck.status"] == "passed"]
    if not failed or not passed:
        sys.exit(f"expected passed and failed runs in {work}/mlflow.db")
    return exp.experiment_id, passed[0], failed[0]


class Shots:
    """One browser page; ``shoot`` waits for what must show, then saves the PNG."""

    def __init__(self, page: Any, out: Path) -> None:
        self.page, self.out = page, out
        self.missing: list[str] = []

    def wait(self, text: str) -> bool:
        try:
            self.page.get_by_text(text, exact=False).first.wait_for(timeout=WAIT_MS)
            return True
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: say what is missing
            self.missing.append(f"{self.page.url}: {text!r} never showed")
            return False

    def shoot(self, name: str, must_show: list[str], full_page: bool = False) -> None:
        for text in must_show:
            self.wait(text)
        self.page.wait_for_timeout(1500)  # charts finish drawing after their data arrives
        path = self.out / name
        self.page.screenshot(path=str(path), full_page=full_page)
        print(f"saved {path}")


RUN_NAME = "[col-id='attributes.`Run Name`']"  # the run list is an AG Grid


def run_list(shots: Shots, base: str, exp: str, names: list[str]) -> None:
    """The runs, the sweep's jobs shown, the verdict tags added as columns and the Run Name
    column dragged wider, as a user would (the steps in docs/trackers.md)."""
    page = shots.page
    page.set_viewport_size({"width": 1800, "height": 700})
    page.goto(f"{base}/#/experiments/{exp}/runs?{ML_VIEW}")
    shots.wait("sweep ")
    page.locator(f"[role=gridcell]{RUN_NAME} button[data-component-id*='runnamecell']").click()
    for column in (*TAG_COLUMNS, *HIDDEN_COLUMNS):  # each click ticks or unticks one
        page.get_by_role("button", name="Columns", exact=True).click()
        page.get_by_placeholder("Search columns").fill(column)
        page.get_by_text(column, exact=True).last.click()  # the menu's item: last in the DOM
        page.keyboard.press("Escape")
    handle = page.locator(f".ag-header-cell{RUN_NAME} .ag-header-cell-resize").bounding_box()
    if handle:  # drag the column's right edge: the names are long
        y = handle["y"] + handle["height"] / 2
        page.mouse.move(handle["x"] + 2, y)
        page.mouse.down()
        page.mouse.move(handle["x"] + 330, y, steps=10)
        page.mouse.up()
    shots.shoot("run_list.png", [*names, "passed", "failed"])
    page.set_viewport_size(VIEWPORT)


def run_pages(shots: Shots, base: str, exp: str, run: Any, passed: Any) -> None:
    """The failing run's overview, charts and report; a passing run's overview."""
    page, rid = shots.page, run.info.run_id
    page.goto(f"{base}/#/experiments/{exp}/runs/{passed.info.run_id}?{ML_VIEW}")
    shots.shoot("run_overview_passed.png", ["trackcheck: PASSED", passed.info.run_name])
    page.goto(f"{base}/#/experiments/{exp}/runs/{rid}?{ML_VIEW}")
    shots.shoot("run_overview.png", ["trackcheck: FAILED", run.info.run_name])
    if shots.wait("report.html"):  # the description's link opens the page in the artifacts
        try:  # MLflow opens a description's links in a new tab
            with page.context.expect_page(timeout=10_000) as tab:
                page.get_by_role("link", name="report.html").first.click(timeout=10_000)
            shots.page = tab.value
            shots.shoot("run_report_link.png", ["trackcheck", "sanity/report.html"])
            tab.value.close()
        except Exception as e:  # noqa: BLE001 - playwright's TimeoutError: hidden or covered
            shots.missing.append(f"the description's report.html link cannot be followed: {e}")
        shots.page = page
    parent = passed.data.tags.get("mlflow.parentRunId")
    if parent:  # the sweep's parent run: its jobs' table
        page.goto(f"{base}/#/experiments/{exp}/runs/{parent}?{ML_VIEW}")
        shots.shoot("sweep_overview.png", ["trackcheck sweep: PASSED"])
    page.goto(f"{base}/#/experiments/{exp}/runs/{rid}/model-metrics?{ML_VIEW}")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1600})
    shots.shoot("run_metrics.png", ["sanity/overfit_batch", "sanity/loss_decreases"])
    page.set_viewport_size(VIEWPORT)
    flow = "sanity/gradient_flow/flow.png"  # a figure MLflow cannot draw from metrics
    page.goto(f"{base}/#/experiments/{exp}/runs/{rid}/artifacts/{flow}?{ML_VIEW}")
    shots.shoot("run_figure.png", ["flow.png"])
    page.goto(f"{base}/#/experiments/{exp}/runs/{rid}/artifacts/sanity/report.html?{ML_VIEW}")
    page.reload()  # a hash change within the artifacts view keeps the file already shown
    shots.shoot("report_html.png", ["report.html"])


def screenshots(base: str, work: Path, out: Path, chromium: str) -> list[str]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("needs Playwright for Python: pip install playwright (no browser download)")
    exp, passed, failed = runs(work)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.add_init_script(QUIET_UI)
        shots = Shots(page, out)
        run_list(shots, base, exp, [passed.info.run_name, failed.info.run_name])
        run_pages(shots, base, exp, failed, passed)
        browser.close()
    return shots.missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("screens"), help="where the PNGs go")
    ap.add_argument("--store", type=Path, help="a folder for mlflow.db (made when empty)")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()
    if not Path(args.chromium).is_file():
        sys.exit(f"no Chromium at {args.chromium}: apt-get install chromium, or --chromium PATH")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.store or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "mlflow.db").exists():
            make_store(work)
        with mlflow_ui(work) as base:
            missing = screenshots(base, work, args.out.resolve(), args.chromium)
    for m in missing:
        print(f"MISSING: {m}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
