"""Figures off the critical path: drawn by the worker process while the next checks run,
awaited before report.html, and never lost when drawing or the worker fails."""

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import blobs

import trackcheck
from trackcheck import CheckResult, Status, plots, render
from trackcheck.models import MLP
from trackcheck.registry import _REGISTRY, all_checks, register


@dataclass
class NoParams:
    pass


@pytest.fixture
def temp_checks():
    before = dict(all_checks())
    yield register
    _REGISTRY.clear()
    _REGISTRY.update(before)


@pytest.fixture
def worker(monkeypatch):
    """Every stage in this test draws in the worker, however few its checks."""
    monkeypatch.setenv(render.ENV, "1")


def curve(ys: list[float]):
    return plots.curves({"y": ys}, "a curve")


def broken(ys: list[float]):
    raise ValueError("no axes for you")


def stage(tmp_path: Path, checks: list[str]) -> trackcheck.Report:
    return trackcheck.run(
        lambda: MLP([8], 4), blobs(), checks=checks, output_dir=tmp_path, progress=False
    )


def figure_check(name: str, fn, order: int):
    @register(name, NoParams, order=order)
    def check(ctx, p):
        return CheckResult(name, Status.PASS, "ok", figures={"f": plots.deferred(fn, [1.0, 2.0])})


def test_the_worker_draws_every_figure_before_report_html(temp_checks, worker, tmp_path):
    for i in range(3):
        figure_check(f"t_fig{i}", curve, order=i)
    report = stage(tmp_path, ["t_fig0", "t_fig1", "t_fig2"])
    paths = [Path(c.figures["f"]) for c in report.checks]
    assert all(p.is_file() and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert render._worker is not None and render._worker.usable()
    doc = json.loads((tmp_path / "report.json").read_text())
    assert [c["figures"]["f"] for c in doc["checks"]] == [str(p) for p in paths]
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64,") == 3


@pytest.mark.parametrize("mode", ["0", "1"], ids=["in_process", "worker"])
def test_a_figure_that_cannot_be_drawn_is_a_note_on_its_check_whose_verdict_stands(
    temp_checks, monkeypatch, tmp_path, mode
):
    monkeypatch.setenv(render.ENV, mode)
    figure_check("t_broken", broken, order=1)
    figure_check("t_fine", curve, order=2)
    report = stage(tmp_path, ["t_broken", "t_fine"])  # no OutputError: the stage ends normally
    assert report.passed and [c.status for c in report.checks] == [Status.PASS, Status.PASS]
    broken_check = report.checks[0]
    assert "f" not in broken_check.figures
    assert "figure f not drawn: ValueError: no axes for you" in broken_check.message
    doc = json.loads((tmp_path / "report.json").read_text())
    assert [c["name"] for c in doc["checks"]] == ["t_broken", "t_fine"]
    assert "figure f not drawn" in doc["checks"][0]["message"] and not doc["checks"][0]["figures"]
    html = (tmp_path / "report.html").read_text()
    assert "figure f not drawn" in html and html.count("data:image/png;base64,") == 1


def test_a_worker_that_dies_mid_stage_loses_no_figure(temp_checks, worker, tmp_path):
    figure_check("t_before", curve, order=1)

    @register("t_kill", NoParams, order=2)
    def kill(ctx, p):
        assert render._worker is not None
        os.kill(render._worker.proc.pid, signal.SIGKILL)
        render._worker.proc.wait()
        return CheckResult("t_kill", Status.PASS, "ok", figures={"f": plots.deferred(curve, [3.0])})

    report = stage(tmp_path, ["t_before", "t_kill"])
    assert all(Path(c.figures["f"]).is_file() for c in report.checks)


def test_the_worker_draws_a_figure_while_this_process_goes_on(tmp_path):
    figs = render.Figures(tmp_path, worker=True)
    drawn = {"f": plots.deferred(plots.curves, {"y": [1.0, 2.0]}, "a curve")}
    figs.submit("t", drawn)
    (job,) = figs.jobs
    # nobody here draws it (finish() is never called); the wait only bounds a starved worker
    assert job.done.wait(300)
    assert job.error is None and not job.lost and Path(drawn["f"]).is_file()


def test_figures_the_worker_cannot_import_are_drawn_here(tmp_path):
    figs = render.Figures(tmp_path, worker=True)
    local = {"lambda": plots.deferred(lambda: curve([1.0])), "drawn": curve([2.0])}
    figs.submit("t", local)
    assert figs.finish() == []
    assert all(Path(p).is_file() for p in local.values())


def test_short_stages_draw_in_process_and_longer_ones_in_the_worker(monkeypatch):
    monkeypatch.delenv(render.ENV, raising=False)
    monkeypatch.setattr(render, "cores", lambda: 2)
    assert not render.use_worker(render.WORKER_MIN_CHECKS - 1)
    assert render.use_worker(render.WORKER_MIN_CHECKS)
    monkeypatch.setenv(render.ENV, "0")
    assert not render.use_worker(100)


def titley_of_a_new_figure() -> float | None:
    import matplotlib

    return matplotlib.rcParams["axes.titley"]


def test_deferred_figures_get_trackcheck_style_and_the_process_keeps_its_own():
    import matplotlib

    before = matplotlib.rcParams["axes.titley"]
    assert plots.deferred(titley_of_a_new_figure).draw() == plots.STYLE["axes.titley"]
    assert matplotlib.rcParams["axes.titley"] == before  # a notebook's style is untouched


def test_prestart_starts_the_worker_a_stage_will_use(monkeypatch):
    monkeypatch.setattr(render, "_worker", None)  # this test's own, closed below
    monkeypatch.setattr(render, "cores", lambda: 2)
    monkeypatch.delenv(render.ENV, raising=False)
    render.prestart()
    started = render._worker
    assert started is not None and started.usable()
    assert render.shared_worker() is started  # the stage's Figures get this one
    started.close()


def test_prestart_starts_nothing_when_the_worker_is_off(monkeypatch):
    monkeypatch.setattr(render, "_worker", None)
    monkeypatch.setenv(render.ENV, "0")
    render.prestart()
    assert render._worker is None
