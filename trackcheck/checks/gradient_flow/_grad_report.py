"""The gradient_flow check's numbers and report: per-layer ratios to the last layer, update
ratios, the result (metrics, the per-layer table, the findings table), the gradient-flow
figure, and the pointer the checks that train append to their failure messages."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from trackcheck import plots
from trackcheck.checks.gradient_flow._grad_probe import Trace
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "gradient_flow"

# a finding: (kind, what was measured, what it means and how to fix it)
Finding = tuple[str, str, str]


def ratios(trace: Trace) -> np.ndarray:
    """[L] each layer's mean |grad| (averaged over the steps) over the last layer's (the
    last in forward order that got one); nan for layers that got none."""
    s = trace.mean_abs.mean(0) if len(trace.mean_abs) else np.zeros(len(trace.layers))
    got = np.flatnonzero(s > 0)
    if not len(got):
        return np.full(len(s), np.nan)
    return np.where(s > 0, s / s[got[-1]], np.nan)


def update_medians(trace: Trace) -> np.ndarray:
    """[L] each layer's median update/weight ratio over the steps (nan: never moved)."""
    if not trace.update.size:
        return np.full(len(trace.layers), np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: nan, as meant
        return np.nanmedian(np.where(trace.update > 0, trace.update, np.nan), 0)


def update_share(trace: Trace, ratio: np.ndarray) -> np.ndarray:
    """[L] each layer's update/weight ratio over the last layer's (0 where it never moved)."""
    u = np.nan_to_num(update_medians(trace), nan=0.0)
    got = np.flatnonzero(np.isfinite(ratio))
    ref = u[got[-1]] if len(got) else 0.0
    return u / ref if ref > 0 else np.ones_like(u)


def report(
    status: Status,
    trace: Trace,
    ratio: np.ndarray,
    findings: list[Finding],
    notes: list[str],
    limits: tuple[float, float],
) -> CheckResult:
    """The values (metrics, per-layer table, figure) and the verdict's message."""
    finite = ratio[np.isfinite(ratio)]
    upd = update_medians(trace)
    g = trace.grad_norm
    dead = max(trace.dead.values(), default=0.0)
    metrics = {
        "layers": float(len(trace.layers)),
        "min_grad_ratio": float(finite.min()) if finite.size else float("nan"),
        "max_grad_ratio": float(finite.max()) if finite.size else float("nan"),
        "grad_norm_growth": float(g.max() / g[0]) if len(g) and g[0] > 0 else float("nan"),
        "median_update_ratio": float(np.nanmedian(upd)) if np.isfinite(upd).any() else 0.0,
        "max_dead_share": dead,
        "unused_params": float(len(trace.no_grad)),
    }
    if status == Status.PASS:
        msg = (
            f"{len(finite)} weight layers all get {metrics['min_grad_ratio']:.2g}-"
            f"{metrics['max_grad_ratio']:.2g}x the last layer's mean |grad| (limits "
            f"{limits[0]:g}-{limits[1]:g}); median update/weight "
            f"{metrics['median_update_ratio']:.2g} per step (heuristic ~1e-3); worst ReLU "
            f"layer {dead:.0%} dead; every trainable parameter gets a gradient"
        )
    else:
        msg = "; ".join(f"{what}: {fix}" for _, what, fix in findings)
    msg += "".join(f"; {n}" for n in notes)
    layers = trace.layers
    rows = (
        [
            [
                n,
                float(trace.mean_abs[:, i].mean()),
                float(trace.max_abs[:, i].max()),
                float(ratio[i]),
                float(upd[i]) if upd.size else float("nan"),
            ]
            for i, n in enumerate(layers)
        ]
        if len(trace.mean_abs)
        else []
    )
    res = result(status, msg, findings, metrics)
    res.value = metrics["min_grad_ratio"]
    res.series = {"grad_norm": list(enumerate(map(float, g)))}
    res.tables["layers"] = {
        "columns": ["layer", "mean_abs_grad", "max_abs_grad", "ratio_to_last", "update_ratio"],
        "rows": rows,
    }
    if rows:
        mean, mx = trace.mean_abs.mean(0), trace.max_abs.max(0)
        res.figures["flow"] = plots.deferred(flow_figure, layers, mean, mx)
    return res


def result(
    status: Status, msg: str, findings: list[Finding], metrics: dict[str, float] | None = None
) -> CheckResult:
    return CheckResult(
        NAME,
        status,
        msg,
        metrics=metrics or {},
        tables={
            "findings": {
                "columns": ["kind", "finding"],
                "rows": [[k, what] for k, what, _ in findings],
            }
        },
        threshold="grad ratio to last layer in [vanish_ratio, explode_ratio], "
        "dead share <= max_dead_share, every trainable parameter gets a gradient",
    )


def flow_figure(layers: list[str], mean: np.ndarray, mx: np.ndarray) -> Figure:
    """The classic gradient-flow plot: max and mean |grad| per layer, in forward order."""
    bottom = plots.text_inches(layers, 6) + 0.45  # the rotated layer names, the x label
    fig, ax = plots.figure(max(5.0, 0.25 * len(layers) + 2), 2.4 + bottom, bottom=bottom)
    x = np.arange(len(layers))
    ax.bar(x, mx, color="tab:cyan", alpha=0.5, lw=1, label="max |grad|")
    ax.bar(x, mean, color="tab:blue", alpha=0.8, lw=1, label="mean |grad|")
    ax.set_yscale("log")
    tallest = mx[np.isfinite(mx) & (mx > 0)]
    if tallest.size:  # a decade of headroom above the bars, where the legend goes
        ax.set_ylim(top=float(tallest.max()) * 10)
        plots.sparse_log_minor_ticks(ax.yaxis)
    ax.set_xticks(x, layers, rotation=90, fontsize=6)
    ax.set(title="gradient flow (mean over steps)", xlabel="layer (forward order)", ylabel="|grad|")
    ax.legend(fontsize=8)
    return fig


def finding_note(ctx: Context) -> str:
    """'; gradient_flow: <its first finding>' when gradient_flow ran before and found
    something (for the failure messages of the checks that train), else ''."""
    r = next((c for c in ctx.finished if c.name == NAME), None)
    if r is None or r.status not in (Status.FAIL, Status.WARN):
        return ""
    rows = r.tables.get("findings", {}).get("rows", [])
    return f"; {NAME}: {rows[0][1]}" if rows else ""


def with_finding_note(ctx: Context, result: CheckResult) -> CheckResult:
    """``result`` with :func:`finding_note` appended to its message when it failed or
    warned (an overfit that stayed undecided on a net whose gradient vanishes)."""
    if result.status in (Status.FAIL, Status.WARN):
        result.message += finding_note(ctx)
    return result
