"""The self-contained HTML report: content, escaping, and figures that really render."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from conftest import tracked_stage

from trackcheck.core import CheckResult, Report, Status
from trackcheck.html import render_html, write_html

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_html.py"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def png(path: Path) -> str:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def report_with(*checks: CheckResult, passed: bool = True) -> Report:
    return Report(checks=list(checks), passed=passed, config={"optim": {"lr": 0.01}})


def test_figures_are_embedded_so_the_page_stands_alone(tmp_path):
    c = CheckResult(
        "overfit_batch", Status.PASS, "fits", figures={"overlay": png(tmp_path / "o.png")}
    )
    page = render_html(report_with(c))
    assert page.count('<img alt="overlay" src="data:image/png;base64,') == 1
    assert 'src="http' not in page and "<script" not in page


def test_a_missing_figure_is_named_not_silently_dropped(tmp_path):
    c = CheckResult(
        "overfit_batch", Status.PASS, "fits", figures={"overlay": str(tmp_path / "gone.png")}
    )
    assert "figure overlay missing" in render_html(report_with(c))


def test_messages_are_escaped():
    c = CheckResult("loss_at_init", Status.FAIL, "logits <script>alert(1)</script> & co")
    page = render_html(report_with(c, passed=False))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page


def test_verdict_numbers_and_check_tables_are_shown():
    c = CheckResult(
        "vectorized_equivalence",
        Status.FAIL,
        "mixes examples",
        value=0.25,
        threshold="< 1e-6",
        metrics={"max_abs_diff": 0.25},
        tables={"per_example": {"columns": ["i", "diff"], "rows": [[3, 0.25]]}},
    )
    page = render_html(report_with(c, passed=False))
    assert "trackcheck <span" in page and ">FAILED</span>" in page
    assert "<td>max_abs_diff</td><td>0.25</td>" in page
    assert "<th>i</th><th>diff</th></tr><tr><td>3</td><td>0.25</td>" in page


def browser() -> str | None:
    return os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)


needs_browser = pytest.mark.skipif(
    browser() is None,
    reason="no Chromium on PATH: apt-get install chromium (or set CHROMIUM=/path/to/it)",
)


def check_html(page: Path, *args: str) -> tuple[int, dict]:
    p = subprocess.run(
        [sys.executable, str(SCRIPT), str(page), "--json", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return p.returncode, json.loads(p.stdout)


@pytest.mark.slow
@needs_browser
def test_a_real_reports_figures_render_in_headless_chromium(tmp_path):
    tracked_stage(None, tmp_path)
    code, result = check_html(tmp_path / "report.html", "--screenshot", str(tmp_path / "s.png"))
    assert code == 0, result["problems"]
    (img,) = result["images"]  # overfit_batch's overlay, the stage's one figure
    assert img["alt"] == "overlay" and img["w"] > 100 and img["h"] > 100
    assert result["expected_images"] == 1
    assert result["ink"] > 0.01  # the screenshot is not blank


@pytest.mark.slow
@needs_browser
def test_the_browser_check_catches_a_figure_that_does_not_decode(tmp_path):
    c = CheckResult(
        "overfit_batch", Status.PASS, "fits", figures={"overlay": png(tmp_path / "o.png")}
    )
    page = write_html(report_with(c), tmp_path)
    text = page.read_text()
    start = text.index("base64,") + len("base64,")
    page.write_text(text[:start] + "AAAA" + text[start + 4 :])  # corrupt the PNG header
    code, result = check_html(page)
    assert code == 1
    assert "did not decode" in result["problems"][0]


def test_summary_messages_wrap_instead_of_widening_the_page():
    # the MLflow artifact pane is narrow: a nowrap message column is cut on the right there
    long = "a message that goes on " * 20 + "/a/path/without/any/spaces/" * 5
    page = render_html(report_with(CheckResult("full_eval", Status.WARN, long, threshold="t")))
    summary = page[page.index('<table class="summary">') :].split("</table>", 1)[0]
    assert f'<td class="wrap msg">{long}</td>' in summary
    css = page[page.index("<style>") : page.index("</style>")]
    assert "table.summary td.wrap{white-space:normal;overflow-wrap:anywhere}" in css
    assert "table-layout:fixed" not in css and "max-width:70" not in css


LAYOUT_PROBE = """<script>
window.addEventListener("load", function () {
  var cut = [];
  document.querySelectorAll("table.summary td").forEach(function (td) {
    if (td.scrollWidth > td.clientWidth + 1) cut.push(td.textContent.slice(0, 30));
  });
  var t = document.querySelector("table.summary").getBoundingClientRect();
  document.documentElement.setAttribute("data-layout", JSON.stringify(
    {right: t.right, view: window.innerWidth, page: document.documentElement.scrollWidth,
     cut: cut}));
});
</script>"""


@pytest.mark.slow
@needs_browser
@pytest.mark.parametrize("width", [500, 800])
def test_the_summary_fits_a_narrow_pane_in_chromium(tmp_path, width):
    import html as html_lib
    import re

    checks = [
        CheckResult(
            "vectorized_equivalence", Status.FAIL, "x " * 300, value=1e-99, threshold="t " * 40
        ),
        CheckResult("full_eval", Status.WARN, "/no/spaces/in/this/path" * 12, threshold="n = 36"),
    ]
    page = tmp_path / "p.html"
    page.write_text(render_html(report_with(*checks)).replace("</body>", LAYOUT_PROBE + "</body>"))
    out = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},800",
         "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    m = re.search(r'data-layout="([^"]*)"', out.stdout)
    assert m, out.stderr[-500:]
    layout = json.loads(html_lib.unescape(m.group(1)))
    assert layout["page"] <= layout["view"] and layout["right"] <= layout["view"], layout
    assert layout["cut"] == [], layout  # no cell's text runs past its border


def test_the_page_leads_with_the_verdict_then_failures_then_warnings_then_the_rest_collapsed():
    checks = [
        CheckResult("loss_at_init", Status.PASS, "loss at init 2.30, expected 2.30"),
        CheckResult("full_eval", Status.WARN, "360 examples: accuracy +-0.05. Use a bigger set"),
        CheckResult("causality", Status.SKIP, "not an autoregressive model"),
        CheckResult("overfit_batch", Status.FAIL, "loss 0.9 after 300 steps: raise the lr"),
    ]
    page = render_html(report_with(*checks, passed=False))
    marks = [
        ">FAILED</span></h1>",
        '<ul class="findings"><li>',
        '<a href="#overfit_batch">overfit_batch</a>: loss 0.9 after 300 steps: raise the lr</li>',
        '<a href="#full_eval">full_eval</a>: ',
        '<table class="summary">',
        '<h2 class="group" id="failures">Failures</h2><section id="overfit_batch">',
        '<h2 class="group" id="warnings">Warnings</h2><section id="full_eval">',
        '<details class="rest"><summary><h2 class="group" id="rest">The other checks: 1 passed, '
        "1 skipped</h2></summary>",
        '<section id="loss_at_init">',
        '<section id="causality">',
    ]
    at = [page.index(m) for m in marks]
    assert at == sorted(at)
    summary = page[page.index('<table class="summary">') :].split("</table>", 1)[0]
    rows = [
        summary.index(f'<a href="#{n}">') for n in ("overfit_batch", "full_eval", "loss_at_init")
    ]
    assert rows == sorted(rows)  # findings first in the summary too


def test_a_thresholds_names_carry_the_values_the_check_used():
    from dataclasses import dataclass

    from trackcheck.gist import with_values

    @dataclass
    class P:
        vanish_ratio: float = 1e-6
        explode_ratio: float = 1e6
        lr: float = 0.1  # a word a threshold may use as prose: left alone

    text = "ratio in [vanish_ratio, explode_ratio], lr below the divergence lr"
    assert with_values(text, P()) == (
        "ratio in [vanish_ratio=1e-06, explode_ratio=1e+06], lr below the divergence lr"
    )
