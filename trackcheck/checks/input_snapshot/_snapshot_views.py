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


TILE_IN = 1.2  # the longer side of one image in the grid, inches
LABEL_IN = 0.2  # the band above each row of images that holds their labels, inches


def image_grid(a: np.ndarray, labels: list[str]) -> Figure:
    """The images [B, C, H, W] or [B, H, W] as the model gets them, up to 8 a row, each with
    its label above it, on ONE shared colour scale (its colour bar shows the raw values, so
    0-255 or a shifted mean is visible); NaN/Inf pixels in red.

    The images are tiled into one mosaic shown in one Axes: an Axes per image made this the
    slowest figure of a stage (creating and laying out 16 Axes took ~0.7 s)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    plt = plots.pyplot()
    if a.ndim == 3:  # [B, H, W] -> [B, 1, H, W]
        a = a[:, None]
    n, c, h, w = a.shape
    cols = max(1, min(n, 8))  # an empty batch draws one blank tile
    rows = max(1, math.ceil(n / cols))
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cmap, norm = plt.get_cmap("gray"), Normalize(lo, hi)
    scale = TILE_IN / max(h, w)  # inches per image pixel
    gap = max(1, round(max(h, w) / 16))  # 1 pixel would vanish in a scaled-down large image
    band = math.ceil(LABEL_IN / scale)
    mosaic = _mosaic(_tiles(a, lo, hi, cmap, norm), cols, rows, gap, band)

    # the figure sized to the mosaic, so each image pixel stays square and nothing is cut
    grey = c != 3  # a colour bar for the grey scale; RGB was rescaled, it has none
    left, right, top, bottom = 0.1, 1.0 if grey else 0.1, 0.3, 0.1
    mosaic_w, mosaic_h = mosaic.shape[1] * scale, mosaic.shape[0] * scale
    extra = max(0.0, 4.0 - (mosaic_w + left + right)) / 2  # room for the title over few images
    left, right = left + extra, right + extra
    fig = plt.figure(figsize=(mosaic_w + left + right, mosaic_h + top + bottom))
    ax = fig.subplots()
    plots.fixed_margins(fig, left=left, bottom=bottom, right=right, top=top)
    ax.imshow(mosaic)
    ax.axis("off")
    for i in range(n):
        r, col = divmod(i, cols)
        ax.text(
            col * (w + gap) + w / 2,
            r * (band + h) + band - 0.5,  # just above the image (pixel centres are integers)
            labels[i][:16],  # about what fits over one image at this size
            ha="center",
            va="bottom",
            fontsize=8,
        )
    if grey:
        # 8 pt: the label fits beside a single row of images
        plots.colorbar(fig, ax, ScalarMappable(norm, cmap), "value fed to the model", fontsize=8)
    title = "inputs as the model receives them (labels above)"
    fig.suptitle(title if c in (1, 3) else title + f": channel 0 of {c}", fontsize=9)
    return fig


def _tiles(a: np.ndarray, lo: float, hi: float, cmap: Any, norm: Any) -> np.ndarray:
    """[B, H, W, 3] uint8 RGB images: grey ones (or channel 0 of C) through ``cmap``, RGB
    min-max scaled for display only; NaN/Inf pixels red."""
    if a.shape[1] == 3:
        with np.errstate(invalid="ignore"):
            scaled = np.clip((a.transpose(0, 2, 3, 1) - lo) / max(hi - lo, 1e-12), 0, 1)
        tiles = (np.nan_to_num(scaled) * 255).astype(np.uint8)
    else:
        tiles = cmap(norm(a[:, 0]), bytes=True)[..., :3]
    tiles[~np.isfinite(a).all(axis=1)] = (255, 0, 0)
    return np.asarray(tiles)


def _mosaic(tiles: np.ndarray, cols: int, rows: int, gap: int, band: int) -> np.ndarray:
    """The tiles [B, H, W, 3] in a grid: white between the images, so the eye can tell them
    apart (``gap`` pixels), and a white band of ``band`` pixels above each row for labels."""
    n, h, w, _ = tiles.shape
    mosaic = np.full((rows * (band + h), cols * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = r * (band + h) + band, col * (w + gap)
        mosaic[y : y + h, x : x + w] = tiles[i]
    return mosaic


def value_heatmap(rows: np.ndarray, names: list[str], labels: list[str]) -> Figure:
    """Tabular rows [N, F] as a heatmap, one row per example: an unscaled feature stands out."""
    plt = plots.pyplot()
    a = np.ma.masked_invalid(rows)
    xticks = [n[:18] for n in names]
    yticks = [f"#{i}: {s[:12]}" for i, s in enumerate(labels)]
    # the margins hold the rotated feature names below, the row labels on the left and the
    # colour bar on the right
    bottom, left = plots.text_inches(xticks, 6) + 0.15, plots.text_inches(yticks, 6) + 0.15
    fig, ax = plots.figure(
        max(5.0, 0.22 * len(names) + 1.0 + left),
        0.25 * len(labels) + 0.5 + bottom,
        left=left,
        bottom=bottom,
        right=1.0,
        top=0.3,
    )
    cmap = plt.get_cmap("coolwarm").with_extremes(bad="black")
    lim = float(np.abs(a).max()) if a.count() else 1.0  # symmetric: 0 is white
    im = ax.imshow(a, aspect="auto", cmap=cmap, interpolation="nearest", vmin=-lim, vmax=lim)
    ax.set_xticks(np.arange(len(names)), xticks, rotation=90, fontsize=6)
    ax.set_yticks(np.arange(len(labels)), yticks, fontsize=6)
    ax.set_title(
        "inputs as the model receives them (row: example: label; NaN in black)", fontsize=9
    )
    plots.colorbar(fig, ax, im, "value")
    return fig


def text_panel(texts: list[str], labels: list[str]) -> Figure:
    """Decoded token inputs, each with its label (the next tokens for a language model)."""
    # axis off: the text needs no room for ticks, only the title above it
    fig, ax = plots.figure(8, 0.55 * len(texts) + 0.8, left=0.1, bottom=0.1, right=0.1, top=0.3)
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
