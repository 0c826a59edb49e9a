"""A self-contained HTML sanity report: every check, its verdict, numbers and figures inline.

It leads with the verdict and, for each finding, what is wrong and the fix (failures first,
then warnings); then the summary table, the failures' and warnings' sections, and the
checks that passed or were skipped collapsed (``<details>``).

One file, no external resources and no JavaScript: figures are embedded as base64 PNGs, so
the page can be mailed, attached to a CI job, or shown by W&B (``wandb.Html``) and MLflow
(HTML artifacts) as is. ``scripts/check_html.py`` renders it in a headless browser and checks
that every figure decodes.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from trackcheck import gist
from trackcheck.core import CheckResult, Report, Status

COLORS = {
    "pass": "#1a7f37",
    "warn": "#9a6700",
    "fail": "#cf222e",
    "error": "#8250df",
    "skip": "#6e7781",
}

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;padding:0 1em;
     color:#1f2328}
h1 span{padding:.1em .5em;border-radius:4px;color:#fff}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top;
      font-size:14px;overflow-wrap:anywhere}
table.summary{width:100%}
table.summary td{white-space:nowrap;overflow-wrap:normal}
table.summary td.wrap{white-space:normal;overflow-wrap:anywhere}
table.summary td.opt.wrap{min-width:9em}
table.summary td.msg{width:50%}
@media (max-width:760px){table.summary .opt{display:none}
  table.summary td.name{white-space:normal;overflow-wrap:anywhere}}
.badge{color:#fff;padding:.05em .45em;border-radius:3px;font-weight:600}
section{border-top:1px solid #d0d7de;margin-top:1.5em}
section p{overflow-wrap:anywhere}
.row{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
figure{margin:0}
figcaption{font-size:13px;color:#59636e}
img{max-width:100%;border:1px solid #eee}
code,pre{font-size:13px}
pre{white-space:pre-wrap;overflow-wrap:anywhere}
.meta{color:#59636e}
ul.findings{padding-left:1.2em}
ul.findings li{margin:.3em 0;overflow-wrap:anywhere}
details.rest>summary h2{display:inline}
"""


SUMMARY_COLUMNS = ("check", "status", "value", "threshold", "time", "message")
REST = ("pass", "skip")  # no finding: after the findings in the summary, collapsed below


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{COLORS.get(status, "#555")}">{status}</span>'


def _num(v: Any, digits: int = 6) -> str:
    """Floats with ``digits`` significant digits; anything else as escaped text."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _img(name: str, path: str) -> str:
    p = Path(path)
    if not p.is_file():
        return f"<p>(figure {html.escape(name)} missing: {html.escape(path)})</p>"
    data = base64.b64encode(p.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
    )


def _table(columns: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_num(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _summary(report: Report) -> str:
    """The checks at a glance, the findings first (``gist.findings``). Never wider than the
    page (MLflow's artifact pane is narrow): status, value and time stay on one line,
    threshold and message wrap (anywhere, so a long path or URL breaks too); below 760px a
    long check id may break, and threshold and time give way (each check's section below
    has them)."""
    e = html.escape
    rows = "".join(
        f'<tr><td class="name"><a href="#{e(c.name)}">{e(c.name)}</a></td>'
        f"<td>{_badge(c.status.value)}</td><td>{_num(c.value, 4)}</td>"
        f'<td class="wrap opt">{e(c.threshold)}</td><td class="opt">{c.duration_s:.2f}s</td>'
        f'<td class="wrap msg">{e(c.message)}</td></tr>'
        for c in [*gist.findings(report), *(c for c in report.checks if c.status.value in REST)]
    )
    opt = {"threshold", "time"}
    head = "".join(f"<th{' class=opt' if c in opt else ''}>{c}</th>" for c in SUMMARY_COLUMNS)
    return f'<table class="summary"><tr>{head}</tr>{rows}</table>'


def _section(c: CheckResult) -> str:
    e = html.escape
    metrics = _table(["metric", "value"], [[k, v] for k, v in c.metrics.items()])
    tables = "".join(
        f"<h4>{e(k)}</h4>{_table(list(t['columns']), list(t['rows']))}" for k, t in c.tables.items()
    )
    figures = "".join(_img(k, str(p)) for k, p in c.figures.items())
    verdict = f"value {_num(c.value)}, threshold {e(c.threshold)}; " if c.threshold else ""
    return (
        f'<section id="{e(c.name)}"><h2>{e(c.name)} {_badge(c.status.value)}</h2>'
        f"<p>{e(c.message)}</p>"
        f'<p class="meta">{verdict}{c.duration_s:.2f}s, {c.n_forward} forward / '
        f"{c.n_backward} backward passes</p>"
        f'<div class="row">{metrics if c.metrics else ""}{figures}</div>{tables}</section>'
    )


def _findings(report: Report) -> str:
    """What failed and what to do, first on the page: each finding's reason (failures, then
    warnings; ``trackcheck.gist``), linked to its section where the message is whole."""
    e = html.escape
    items = "".join(
        f'<li>{_badge(c.status.value)} <a href="#{e(c.name)}">{e(c.name)}</a>: '
        f"{e(gist.reason_of(c, report))}</li>"
        for c in gist.findings(report)
    )
    return f'<ul class="findings">{items}</ul>' if items else ""


def _sections(report: Report) -> str:
    """Each check's section: failures (and errors) first, then warnings, open; the checks
    that passed or were skipped after them, collapsed."""
    groups = [
        ("Failures", [c for c in report.checks if c.status in (Status.FAIL, Status.ERROR)]),
        ("Warnings", [c for c in report.checks if c.status == Status.WARN]),
    ]
    out = "".join(
        f'<h2 class="group" id="{title.lower()}">{title}</h2>{"".join(map(_section, cs))}'
        for title, cs in groups
        if cs
    )
    rest = [c for c in report.checks if c.status in (Status.PASS, Status.SKIP)]
    if rest:
        tally = Counter(c.status.value for c in rest)
        what = ", ".join(f"{n} {'passed' if s == 'pass' else 'skipped'}" for s, n in tally.items())
        out += (
            f'<details class="rest"><summary><h2 class="group" id="rest">The other checks: '
            f"{what}</h2></summary>{''.join(map(_section, rest))}</details>"
        )
    return out


def render_html(report: Report) -> str:
    """The page: the verdict, what failed and what to do, the summary (findings first),
    then each check's section (failures, warnings, the rest collapsed), the config."""
    e = html.escape
    color = COLORS["pass" if report.passed else "fail"]
    env = ", ".join(f"{k} {v}" for k, v in report.environment.items())
    config = json.dumps(report.config, indent=2, default=str)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>trackcheck: {report.status}</title><style>{CSS}</style></head><body>"
        f'<h1>trackcheck <span style="background:{color}">{report.status.upper()}</span></h1>'
        f"<p>{len(report.checks)} checks: {e(gist.tally(report))}; "
        f"{report.duration_s:.1f}s</p>{_findings(report)}"
        f'<p class="meta">{e(env)}</p>'
        f"{_summary(report)}{_sections(report)}"
        f"<section><details><summary>config (secrets redacted)</summary>"
        f"<pre>{e(config)}</pre></details></section></body></html>"
    )


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a
    reader (or a disk that fills up halfway) never leaves half a report; an earlier
    version stays whole until the new one is complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_html(report: Report, out: Path) -> Path:
    path = Path(out) / "report.html"
    write_text_atomic(path, render_html(report))
    return path
