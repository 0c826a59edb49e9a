"""Matplotlib figures the checks return. Agg backend: no display, rendered once to PNG.

matplotlib is imported on first draw (:func:`pyplot`), not with this module: checks build
``Deferred`` figures without it, and the drawing usually happens in the figure worker
(:mod:`trackcheck.render`), so a stage's process may never import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# the resolution figures are saved at (trackcheck.render) and text is measured at here
DPI = 80

# rcParams the Deferred figures are built under (never set on the process: a notebook or a
# user's own figures keep their style)
STYLE: dict[Any, Any] = {
    # each title 1.0 above its Axes instead of placed by matplotlib, which measures the tick
    # labels of every Axes on each save in case some sit on top: ~15% of the drawing time of
    # the default checks' figures, and the same pixels (no trackcheck figure has top labels)
    "axes.titley": 1.0,
}


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Deferred:
    """A figure to draw later: ``fn(*args, **kwargs)`` returns a matplotlib Figure.

    Checks return these instead of drawn figures, so drawing happens off the critical
    path; ``fn`` is a module-level function and the arguments plain data (numpy arrays,
    lists, strings: never tensors or models), so the drawing can move to another process.
    """

    fn: Callable[..., Figure]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def draw(self) -> Figure:
        import matplotlib

        with matplotlib.rc_context(STYLE):  # read as the figure's Axes are created
            return self.fn(*self.args, **self.kwargs)


def deferred(fn: Callable[..., Figure], *args: Any, **kwargs: Any) -> Deferred:
    """``deferred(plots.curves, {"loss": ys}, "title")``: draw ``fn(*args)`` later."""
    return Deferred(fn, args, kwargs)


def fixed_margins(
    fig: Figure,
    left: float = 0.75,
    bottom: float = 0.55,
    right: float = 0.2,
    top: float = 0.35,
    wgap: float = 0.0,
    hgap: float = 0.0,
) -> None:
    """Lay out ``fig``'s grid of subplots with fixed margins, in inches: ``left`` ...
    ``top`` around the grid, ``wgap``/``hgap`` between its columns/rows.

    Used instead of matplotlib's constrained layout, which measures every tick label on each
    save: ~70% of the save time of a simple figure, where fixed margins cost nothing. Inches,
    not fractions of the figure, so a figure that grows with its content (a bar per layer, a
    row per example) keeps the same room for its labels. The defaults fit one Axes with a
    title, both axis labels and tick labels at the default font size.
    """
    w, h = fig.get_size_inches()
    rows, cols = 1, 1
    if fig.axes and (spec := fig.axes[0].get_subplotspec()) is not None:
        rows, cols = spec.get_topmost_subplotspec().get_gridspec().get_geometry()
    # margins that would leave no room for the axes shrink (to 90% of the figure), never an
    # error
    lf, rf = _fit(left / w, right / w)
    bf, tf = _fit(bottom / h, top / h)
    # matplotlib's wspace/hspace are fractions of the mean axes width/height
    axes_w = max((w * (1 - lf - rf) - (cols - 1) * wgap) / cols, 1e-3)
    axes_h = max((h * (1 - bf - tf) - (rows - 1) * hgap) / rows, 1e-3)
    fig.subplots_adjust(
        left=lf, right=1 - rf, bottom=bf, top=1 - tf, wspace=wgap / axes_w, hspace=hgap / axes_h
    )


def sparse_log_minor_ticks(*axes: Any) -> None:
    """Minor ticks of log-scale ``axes`` (``ax.xaxis``, ``ax.yaxis``) at 2x and 5x each power
    of ten only, instead of all of 2x ... 9x: every tick is a handful of artists, and on a
    log-log figure spanning a few decades they were a third of its save time. Call it once
    the data is plotted: an axis spanning less than a decade keeps them all (there the
    minor ticks carry the only labels)."""
    from matplotlib.ticker import LogLocator

    for axis in axes:
        lo, hi = sorted(axis.get_view_interval())
        if lo > 0 and hi >= 10 * lo:
            axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))


def colorbar(fig: Figure, ax: Any, mappable: Any, label: str, fontsize: float = 10) -> Any:
    """A colour bar 0.15 inches wide, 0.12 inches right of ``ax`` and as tall as it (leave
    ~1 inch of right margin for it, its ticks and ``label``; the label must not be longer
    than the bar). Under a fixed layout, ``fig.colorbar(ax=ax)`` takes a fraction of the
    axes' width instead: a wide gap beside a wide heatmap, and a bar taller than an image
    whose aspect shrank its axes."""
    fw, _ = fig.get_size_inches()
    box = ax.get_position()
    cax = fig.add_axes((box.x1 + 0.12 / fw, box.y0, 0.15 / fw, box.height))
    bar = fig.colorbar(mappable, cax=cax)
    bar.set_label(label, fontsize=fontsize)
    return bar


def _fit(a: float, b: float, most: float = 0.9) -> tuple[float, float]:
    """Two margins (fractions of the figure) scaled down together to ``most`` at most."""
    scale = min(1.0, most / (a + b)) if a + b > 0 else 1.0
    return a * scale, b * scale


def text_inches(texts: Sequence[str], fontsize: float) -> float:
    """The width in inches of the widest of ``texts`` (one line each) at ``fontsize``: the
    margin that tick labels of arbitrary length (layer names, class names) need."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    # measured as drawn at the DPI figures are saved at: glyph hinting makes small text up
    # to ~7% wider than its unhinted outline
    renderer, prop = RendererAgg(1, 1, DPI), FontProperties(size=fontsize)
    widths = [renderer.get_text_width_height_descent(t, prop, False)[0] for t in texts]
    return max(widths, default=0.0) / DPI  # pixels -> inches


def figure(w: float = 5.0, h: float = 3.2, **margins: float) -> tuple[Figure, Any]:
    """One Axes on a ``w`` x ``h`` inch figure, laid out by :func:`fixed_margins`
    (``margins``: its keyword arguments, in inches)."""
    fig, ax = pyplot().subplots(figsize=(w, h))
    fixed_margins(fig, **margins)
    return fig, ax


# a series whose positive values span more than this factor gets a log axis: on a linear
# one, a loss that jumps to 3e7 at step 1 and falls back to 2 draws as a spike then a flat
# line at 0 (it "decreased"); two decades is where a linear axis starts to flatten the rest
LOG_SPAN = 100.0


def y_scale(*series: Sequence[float]) -> tuple[str, float]:
    """The y scale that shows every value of ``series``: ``("linear", 0)``, ``("log", 0)``
    for positive values spanning more than :data:`LOG_SPAN`, ``("symlog", linthresh)`` when
    they span as much but some are 0 or negative (linear within ``linthresh`` of 0, the
    smallest nonzero magnitude's order). Non-finite values are left out (matplotlib draws
    none)."""
    v = np.concatenate([np.asarray(s, dtype=float).ravel() for s in series] or [np.zeros(0)])
    v = v[np.isfinite(v)]
    mag = np.abs(v[v != 0])
    if not mag.size or mag.max() <= LOG_SPAN * mag.min():
        return "linear", 0.0
    if (v > 0).all():
        return "log", 0.0
    return "symlog", float(10 ** np.floor(np.log10(mag.min())))


def set_y_scale(ax: Any, *series: Sequence[float]) -> str:
    """Give ``ax`` the :func:`y_scale` of ``series``; returns its name (for the label)."""
    scale, linthresh = y_scale(*series)
    if scale == "symlog":
        ax.set_yscale("symlog", linthresh=linthresh)
    elif scale == "log":
        ax.set_yscale("log")
        sparse_log_minor_ticks(ax.yaxis)
    return scale


def curves(
    series: Mapping[str, Sequence[float]],
    title: str,
    ylabel: str = "loss",
    logy: bool | None = None,
    hline: float | None = None,
    hline_label: str = "",
) -> Figure:
    """Named series over their steps, in one Axes so that a check's comparison (real vs
    blanked inputs, the model vs a bigger one) is one picture. ``logy``: None picks the
    scale (:func:`y_scale`: log where the values span orders of magnitude), True/False
    forces it."""
    fig, ax = figure()
    for name, ys in series.items():
        ax.plot(np.arange(len(ys)), ys, label=name)
    if hline is not None:
        ax.axhline(hline, color="k", ls="--", lw=1, label=hline_label)
    values = [*series.values(), *([[hline]] if hline is not None else [])]
    if logy is None:
        scale = set_y_scale(ax, *values)
    else:
        scale = "log" if logy else "linear"
        ax.set_yscale(scale)
    unit = f"{ylabel} ({scale} scale)" if scale != "linear" else ylabel
    ax.set(title=title, xlabel="step", ylabel=unit)
    ax.legend(fontsize=8)
    return fig


def overlay_classes(probs: np.ndarray, labels: np.ndarray, title: str) -> Figure:
    """Predicted probabilities [N, C] as bars, the one-hot label as an outline, per example."""
    n, c = probs.shape
    fig, axes = pyplot().subplots(n, 1, figsize=(5, 0.9 * n + 0.8), sharex=True, squeeze=False)
    fixed_margins(fig, left=0.5, bottom=0.5, top=0.3, hgap=0.1)
    for i in range(n):
        ax = axes[i, 0]
        onehot = np.eye(c)[labels[i]]
        ax.bar(np.arange(c), probs[i], color="tab:blue", label="prediction")
        ax.bar(np.arange(c), onehot, fill=False, edgecolor="tab:red", lw=1.5, label="label")
        ax.set_ylim(0, 1.05)
        ax.set_yticks([])
        ax.set_ylabel(f"#{i}", rotation=0, labelpad=12)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xticks(np.arange(c))
    axes[-1, 0].set_xlabel("class")
    return fig


def overlay_values(y: np.ndarray, yhat: np.ndarray, title: str, ylabel: str = "value") -> Figure:
    """Labels and predictions per example on one axis: they should sit on top of each other."""
    fig, ax = figure()
    idx = np.arange(len(y))
    ax.scatter(idx, y, s=60, facecolors="none", edgecolors="tab:red", label="label")
    ax.scatter(idx, yhat, s=18, color="tab:blue", label="prediction")
    ax.set(title=title, xlabel="example", ylabel=ylabel)
    ax.legend(fontsize=8)
    return fig


def overlay_tokens(target: list[str], predicted: list[str], title: str) -> Figure:
    """Next-token labels over the model's argmax predictions, mismatches in red."""
    # axis off: the text needs no room for ticks, only the title above it
    fig, ax = figure(7, 0.4 * len(target) + 0.8, left=0.1, bottom=0.1, right=0.1, top=0.3)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    for row, (t, p) in enumerate(zip(target, predicted, strict=True)):
        yy = 1 - (row + 0.5) / max(len(target), 1)
        ax.text(
            0,
            yy,
            "label: " + repr(t)[1:-1][:70],
            family="monospace",
            fontsize=8,
            transform=ax.transAxes,
        )
        ok = t == p
        ax.text(
            0,
            yy - 0.35 / max(len(target), 1),
            "pred:  " + repr(p)[1:-1][:70],
            family="monospace",
            fontsize=8,
            color="tab:green" if ok else "tab:red",
            transform=ax.transAxes,
        )
    return fig
