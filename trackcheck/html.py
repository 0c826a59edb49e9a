"""A self-contained HTML sanity report: every check, its verdict, numbers and figures inline."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from trackcheck.core import Report

COLORS = {
    "pass": "#1a7f37",
    "warn": "#9a6700",
    "fail": "#cf222e",
    "error": "#8250df",
    "skip": "#6e7781",
}

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#1f2328}
h1 span{padding:.1em .5em;border-radius:4px;color:#fff}
table{border-collapse:collapse;width:100%;margin:1em 0}
td,th{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top;font-size:14px}
.badge{color:#fff;padding:.05em .45em;border-radius:3px;font-weight:600}
section{border-top:1px solid #d0d7de;margin-top:1.5em}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}
code{font-size:13px}
"""


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{COLORS.get(status, "#555")}">{status}</span>'


def _img(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        return f"<p>(figure missing: {html.escape(path)})</p>"
    data = base64.b64encode(p.read_bytes()).decode()
    return f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{data}">'


def render_html(report: Report) -> str:
    e = html.escape
    color = COLORS["pass" if report.passed else "fail"]
    rows = "".join(
        f'<tr><td><a href="#{e(c.name)}">{e(c.name)}</a></td><td>{_badge(c.status.value)}</td>'
        f"<td>{'' if c.value is None else f'{c.value:.4g}'}</td><td>{e(c.threshold)}</td>"
        f"<td>{c.duration_s:.2f}s</td><td>{e(c.message)}</td></tr>"
        for c in report.checks
    )
    sections = []
    for c in report.checks:
        metrics = "".join(
            f"<tr><td><code>{e(k)}</code></td><td>{v:.6g}</td></tr>" for k, v in c.metrics.items()
        )
        figs = "".join(f"<h4>{e(k)}</h4>{_img(str(p))}" for k, p in c.figures.items())
        sections.append(
            f'<section id="{e(c.name)}"><h2>{e(c.name)} {_badge(c.status.value)}</h2>'
            f"<p>{e(c.message)}</p>"
            + (f"<table><tr><th>metric</th><th>value</th></tr>{metrics}</table>" if metrics else "")
            + figs
            + "</section>"
        )
    env = ", ".join(f"{k} {v}" for k, v in report.environment.items())
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>trackcheck report</title>"
        f"<style>{CSS}</style></head><body>"
        f'<h1>trackcheck <span style="background:{color}">{report.status}</span></h1>'
        f"<p>{e(env)}; {report.duration_s:.1f}s"
        + (f"; gate failed on: <b>{e(', '.join(report.gated_on))}</b>" if report.gated_on else "")
        + "</p><table><tr><th>check</th><th>status</th><th>value</th><th>threshold</th>"
        f"<th>time</th><th>message</th></tr>{rows}</table>{''.join(sections)}</body></html>"
    )


def write_html(report: Report, out: Path) -> Path:
    path = Path(out) / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path
