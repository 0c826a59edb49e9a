"""Figures and tables for the input_snapshot check: the captured batch drawn and listed as the
model receives it (images on one shared colour scale, tabular rows as a heatmap, token ids
decoded), with table cells made JSON-safe. Rendering only: the check measures and judges.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from trackcheck import plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STATS = ("mean", "std", "min", "max", "rms")  # column_stats' keys, in table order


def num(v: float) -> float | None:
    """A JSON-safe table cell: NaN/Inf become None (JSON has no NaN)."""
    return float(f"{v:.5g}") if math.isfinite(v) else None


def stats_table(word: str, names: list[str], st: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    """One row per channel/feature: its mean, std, min, max and RMS over the batch."""
    return {
        "columns": [word, *STATS],
        "rows": [[n, *(num(st[k][i]) for k in STATS)] for i, n in enumerate(names)],
    }


def rows_table(rows: Tensor, names: list[str], labels: list[str]) -> dict[str, list[Any]]:
    """Tabular rows [N, F] as the model gets them, each with its label."""
    return {
        "columns": ["example", *names, "label"],
        "rows": [[i, *(num(v) for v in row.tolist()), labels[i]] for i, row in enumerate(rows)],
    }


def decoded_table(texts: list[str], labels: list[str]) -> dict[str, list[Any]]:
    return {
        "columns": ["example", "input", "label"],
        "rows": [[i, t, labels[i]] for i, t in enumerate(texts)],
    }


def image_grid(a: np.ndarray, labels: list[str]) -> Figure:
    """The images [B, C, H, W] or [B, H, W] as the model gets them, on ONE shared colour
    scale (its colour bar shows the raw values, so 0-255 or a shifted mean is visible);
    NaN/Inf pixels in red."""
    plt = plots.pyplot()
    if a.ndim == 3:  # [B, H, W] -> [B, 1, H, W]
        a = a[:, None]
    n, c = a.shape[0], a.shape[1]
    cols = min(n, 8)
    rows = max(1, math.ceil(n / cols))
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(1.3 * cols + 0.8, 1.4 * rows + 0.4),
        squeeze=False,
        layout="constrained",
    )
    cmap = plt.get_cmap("gray").with_extremes(bad="red")
    im = None
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = a[i]
        if c == 3:  # RGB: min-max scaled for display only (imshow needs [0, 1])
            rgb = np.nan_to_num((img.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-12), nan=0.0)
            ax.imshow(np.clip(rgb, 0, 1))
        else:  # grey (or the first channel of a C-channel input)
            im = ax.imshow(np.ma.masked_invalid(img[0]), cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(labels[i], fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="value fed to the model")
    title = "inputs as the model receives them (labels above)"
    fig.suptitle(title if c in (1, 3) else title + f": channel 0 of {c}", fontsize=9)
    return fig


def value_heatmap(rows: np.ndarray, names: list[str], labels: list[str]) -> Figure:
    """Tabular rows [N, F] as a heatmap, one row per example: an unscaled feature stands out."""
    plt = plots.pyplot()
    a = np.ma.masked_invalid(rows)
    fig, ax = plots.figure(max(5.0, 0.22 * len(names) + 2), 0.25 * len(labels) + 1.8)
    cmap = plt.get_cmap("coolwarm").with_extremes(bad="black")
    lim = float(np.abs(a).max()) if a.count() else 1.0  # symmetric: 0 is white
    im = ax.imshow(a, aspect="auto", cmap=cmap, interpolation="nearest", vmin=-lim, vmax=lim)
    ax.set_xticks(np.arange(len(names)), [n[:18] for n in names], rotation=90, fontsize=6)
    ax.set_yticks(
        np.arange(len(labels)), [f"#{i}: {s[:12]}" for i, s in enumerate(labels)], fontsize=6
    )
    ax.set_title(
        "inputs as the model receives them (row: example: label; NaN in black)", fontsize=9
    )
    fig.colorbar(im, ax=ax, label="value")
    return fig


def text_panel(texts: list[str], labels: list[str]) -> Figure:
    """Decoded token inputs, each with its label (the next tokens for a language model)."""
    fig, ax = plots.figure(8, 0.55 * len(texts) + 0.8)
    ax.axis("off")
    ax.set_title("token inputs as the model receives them, decoded", fontsize=10)
    n = max(len(texts), 1)
    for i, (t, lab) in enumerate(zip(texts, labels, strict=True)):
        yy = 1 - (i + 0.3) / n
        ax.text(
            0,
            yy,
            f"#{i} in:    " + repr(t)[1:-1][:90],
            family="monospace",
            fontsize=7,
            transform=ax.transAxes,
        )
        ax.text(
            0,
            yy - 0.4 / n,
            "   label: " + repr(lab)[1:-1][:90],
            family="monospace",
            fontsize=7,
            color="tab:blue",
            transform=ax.transAxes,
        )
    return fig
