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
        return self.fn(*self.args, **self.kwargs)


def deferred(fn: Callable[..., Figure], *args: Any, **kwargs: Any) -> Deferred:
    """``deferred(plots.curves, {"loss": ys}, "title")``: draw ``fn(*args)`` later."""
    return Deferred(fn, args, kwargs)


def figure(w: float = 5.0, h: float = 3.2) -> tuple[Figure, Any]:
    fig, ax = pyplot().subplots(figsize=(w, h), layout="constrained")
    return fig, ax


def curves(
    series: Mapping[str, Sequence[float]],
    title: str,
    ylabel: str = "loss",
    logy: bool = False,
    hline: float | None = None,
    hline_label: str = "",
) -> Figure:
    fig, ax = figure()
    for name, ys in series.items():
        ax.plot(np.arange(len(ys)), ys, label=name)
    if hline is not None:
        ax.axhline(hline, color="k", ls="--", lw=1, label=hline_label)
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.legend(fontsize=8)
    return fig


def overlay_classes(probs: np.ndarray, labels: np.ndarray, title: str) -> Figure:
    """Predicted probabilities [N, C] as bars, the one-hot label as an outline, per example."""
    n, c = probs.shape
    fig, axes = pyplot().subplots(
        n, 1, figsize=(5, 0.9 * n + 0.6), sharex=True, layout="constrained", squeeze=False
    )
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
    fig, ax = figure(7, 0.4 * len(target) + 0.8)
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
