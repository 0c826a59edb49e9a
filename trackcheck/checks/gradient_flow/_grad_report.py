"""The gradient_flow check's numbers and report: per-layer ratios to the last layer, update
ratios, the result (metrics, the per-layer table, the findings table), the gradient-flow
figure, and the pointer the checks that train append to their failure messages."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trackcheck import plots
from trackcheck.checks.gradient_flow._grad_probe import Trace
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status

if TYPE_CHECKING:
    from matplotlib.axes import Axes
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
    with np.errstate(invalid="ignore"):  # inf / inf on a diverged run: nan, as no gradient
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
    judged: Judged | None = None,
) -> CheckResult:
    """The values (metrics, per-layer table, figure) and the verdict's message. ``judged``:
    the limits the figure draws (those of ``limits`` and the growth and dead-unit ones)."""
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
        j = judged or Judged(limits[0], limits[1])
        res.figures["flow"] = plots.deferred(
            flow_figure, layers, trace.mean_abs.mean(0), trace.max_abs.max(0), list(map(float, g)),
            j, _judged_dead(trace, j), _flagged(trace, ratio, j),
        )  # fmt: skip
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


@dataclass(frozen=True)
class Judged:
    """The limits gradient_flow judged by, as its figure draws them (plain floats: the
    figure may be drawn in another process)."""

    vanish_ratio: float
    explode_ratio: float
    max_growth: float = 0.0  # 0: not drawn
    vanish_update_share: float = 1.0
    max_dead_share: float = 0.0
    min_dead_samples: int = 0


def _judged_dead(trace: Trace, judged: Judged) -> dict[str, float]:
    """ReLU sites that saw enough values to be judged -> their dead share."""
    least = judged.min_dead_samples
    return {s: v for s, v in trace.dead.items() if trace.samples.get(s, 0) >= least}


def _flagged(trace: Trace, ratio: np.ndarray, j: Judged) -> list[bool]:
    """[L] the layers gradient_flow names as vanishing or exploding (the test of its
    ``_flow``, on the same ratios and update shares); a layer with no gradient (ratio nan)
    is not one of them (it is unused or behind dead units)."""
    share = update_share(trace, ratio)
    with np.errstate(invalid="ignore"):
        low = (ratio < j.vanish_ratio) & (share < j.vanish_update_share)
        return [bool(b) for b in low | (ratio > j.explode_ratio)]


NO_GRAD = " (no gradient)"  # after a layer's name
FONT = 9  # layer names and tick labels: 10 px at the saved DPI, readable at 100% zoom
LEGEND = 2.4  # inches right of the panels: their legends, never over a bar
NAME_MAX = 48  # characters of a layer name shown (the middle cut): the table has them whole


def _short(name: str) -> str:
    return name if len(name) <= NAME_MAX else name[:20] + "…" + name[-(NAME_MAX - 21) :]


def flow_figure(
    layers: list[str],
    mean: np.ndarray,
    mx: np.ndarray,
    grad_norm: list[float],
    judged: Judged,
    dead: dict[str, float],
    flagged: list[bool],
) -> Figure:
    """What gradient_flow judged, top to bottom: the whole gradient's norm over the steps
    against its growth limit; each layer's mean and max |grad| (forward order, names read
    horizontally) against the vanish/explode limits, which are relative to the last layer's
    mean |grad|; each judged ReLU site's dead share against its limit. Red: beyond a limit.
    A layer that got no gradient is greyed, "(no gradient)". Layer rows: ``mean``, ``mx``,
    ``flagged`` (named vanishing or exploding) [L]; ``grad_norm`` [S]."""
    names = [_short(n) + NO_GRAD for n in layers] + [_short(n) for n in dead]
    left = plots.text_inches(names, FONT) + 0.25
    rows = [1.6, 0.22 * len(layers) + 0.3, *([0.22 * len(dead) + 0.3] if dead else [])]
    gaps = 0.75  # a title above each panel and the x label below it
    h = 0.35 + sum(rows) + gaps * (len(rows) - 1) + 0.55
    w = left + 4.2 + LEGEND
    fig = plots.pyplot().figure(figsize=(w, h))
    y = h - 0.35
    boxes = []
    for r in rows:  # each panel placed in inches: the names' margin is the same for all
        y -= r
        boxes.append(fig.add_axes((left / w, y / h, 4.2 / w, r / h)))
        y -= gaps
    _norm_panel(boxes[0], grad_norm, judged.max_growth)
    _layer_panel(boxes[1], layers, mean, mx, judged, np.array(flagged, dtype=bool))
    if dead:
        _dead_panel(boxes[2], dead, judged.max_dead_share)
    return fig


def _legend(ax: Axes) -> None:
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def _norm_panel(ax: Axes, g: list[float], max_growth: float) -> None:
    """[S] the gradient norm per step (log axis), the growth limit (step 0's x max_growth)."""
    steps, v = np.arange(len(g)), np.asarray(g, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    ax.plot(steps[ok], v[ok], "o-", color="tab:blue", label="gradient norm")
    title, over = "gradient norm over the steps", False
    if len(v) and ok[0] and max_growth > 0:
        limit = v[0] * max_growth
        high = ok & (v > limit)
        over = bool(high.any() or not np.isfinite(v).all())
        ax.axhline(limit, color="tab:red", ls="--", lw=1, label=f"limit: {max_growth:g}x step 0")
        ax.plot(steps[high], v[high], "o", color="tab:red")
        title += f": grows {v[ok].max() / v[0]:.3g}x (limit {max_growth:g}x)"
    if not np.isfinite(v).all():
        k = int(np.flatnonzero(~np.isfinite(v))[0])
        title += f"; {v[k]} at step {k}"
        over = True
    if ok.any():  # a log axis needs a positive value (every norm non-finite: none)
        ax.set_yscale("log")
    ax.set_xticks(steps)
    ax.tick_params(labelsize=FONT)
    ax.set_title(title, fontsize=10, color="tab:red" if over else "k")
    ax.set_xlabel("step", fontsize=FONT)
    ax.set_ylabel("||grad||", fontsize=FONT)
    _legend(ax)


def _layer_panel(
    ax: Axes, layers: list[str], mean: np.ndarray, mx: np.ndarray, j: Judged, beyond: np.ndarray
) -> None:
    """[L] bars: max |grad| (light), mean |grad| (red where flagged); dashed: the vanish and
    explode limits where they fall near the bars, dotted: the last layer's mean."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    y = np.arange(len(layers))
    got = np.flatnonzero(np.isfinite(mean) & (mean > 0))
    ref = float(mean[got[-1]]) if len(got) else 0.0
    ax.barh(y, np.where(mx > 0, mx, np.nan), color="tab:cyan", alpha=0.5)
    ax.barh(y, np.where(mean > 0, mean, np.nan), color=np.where(beyond, "tab:red", "tab:blue"))
    handles: list[Any] = [Patch(color="tab:cyan", alpha=0.5, label="max |grad|"),
               Patch(color="tab:blue", label="mean |grad|")]  # fmt: skip
    if beyond.any():
        what = f"vanishing (and < {j.vanish_update_share:.0%} of\nits update) or exploding"
        handles.append(Patch(color="tab:red", label=what))
    labels = [_short(n) + ("" if mean[i] > 0 else NO_GRAD) for i, n in enumerate(layers)]
    ax.set_yticks(y, labels, fontsize=FONT)
    for k, tick in enumerate(ax.get_yticklabels()):
        tick.set_color("tab:red" if beyond[k] else "k" if mean[k] > 0 else "0.5")
    ax.invert_yaxis()  # forward order, top to bottom
    shown = np.concatenate([mean, mx])
    shown = shown[np.isfinite(shown) & (shown > 0)]  # a diverged run's inf/nan draw no bar
    if shown.size:  # a log axis needs a positive, finite value
        ax.set_xscale("log")
    off: list[Any] = []
    if ref > 0 and shown.size:
        lo, hi = float(shown.min()) / 10, float(shown.max()) * 10
        for r, what in ((j.vanish_ratio, "vanish"), (j.explode_ratio, "explode")):
            if lo <= ref * r <= hi:
                handles.append(ax.axvline(ref * r, color="tab:red", ls="--", lw=1,
                                          label=f"{what} limit: {r:g}x"))  # fmt: skip
            else:  # a legend line of its own: the limit is far from every bar
                off.append(Line2D([], [], color="none", label=f"{what} limit {r:g}x: off axis"))
        name = _short(layers[got[-1]])
        handles.append(ax.axvline(ref, color="0.3", ls=":", lw=1, label=f"last layer ({name})"))
        ax.set_xlim(lo, hi)
    if shown.size:
        plots.sparse_log_minor_ticks(ax.xaxis)
    ax.tick_params(axis="x", labelsize=FONT)
    bad = int(beyond.sum())
    ax.set_title(
        f"|grad| per layer, mean over steps: {bad} of {len(layers)} beyond the limits"
        if bad
        else f"|grad| per layer, mean over steps: all {len(layers)} within the limits",
        fontsize=10,
        color="tab:red" if bad else "k",
    )
    ax.set_xlabel("|grad| (limits: multiples of the last layer's mean)", fontsize=FONT)
    ax.legend(handles=handles + off, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0)  # fmt: skip


def _dead_panel(ax: Axes, dead: dict[str, float], limit: float) -> None:
    sites = list(dead)
    y = np.arange(len(sites))
    share = np.array([dead[s] for s in sites])
    over = share > limit
    ax.barh(y, share, color=["tab:red" if o else "tab:blue" for o in over])
    ax.axvline(limit, color="tab:red", ls="--", lw=1, label=f"limit {limit:.0%}")
    ax.set_xlim(0, 1)
    ax.set_yticks(y, [_short(s) for s in sites], fontsize=FONT)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=FONT)
    ax.set_title(
        f"dead units per ReLU layer (never fire): {int(over.sum())} beyond the limit",
        fontsize=10,
        color="tab:red" if over.any() else "k",
    )
    ax.set_xlabel("share of units that never fired", fontsize=FONT)
    _legend(ax)


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
