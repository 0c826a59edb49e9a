"""visualize just before the net: capture exactly what ``model(x)`` receives, decode it, and
check it is finite and on a sane scale.

A forward pre-hook on the root module records the arguments of the model's forward for one
training batch, fed as training feeds it (after the loader's collate and any batch-level
transform), so what is shown is what the network sees, not what the dataset was meant to
hold. The batch's labels are captured beside the inputs.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from trackcheck import plots
from trackcheck.checks import _streams
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import Batch, primary_key
from trackcheck.registry import register


@dataclass
class InputSnapshotParams:
    n_show: int = 16  # examples drawn in the figure and listed in the tables
    # Warn when a channel's (images) or feature's (tabular) root mean square over the batch,
    # sqrt(mean(x^2)) = sqrt(mean^2 + std^2), exceeds this. Standardised inputs have exactly 1
    # over the training set, and default inits (Kaiming, Glorot) assume O(1) inputs; 10 is an
    # order of magnitude off, i.e. first-layer pre-activations 10x (variance 100x) larger than
    # the init was designed for. Measured: the shipped data's worst channel/feature over every
    # training batch is 1.61 (breast_cancer), [0, 1] pixels stay <= 1, raw 0-255 digits pixels
    # give 124, raw breast_cancer features up to 1048. Raw 0-16 digits (7.7) pass: the rule is
    # for clearly unnormalised inputs. A single standardised value needs |z| > 10 sqrt(B) (80
    # at B = 64) to lift a batch's RMS past 10.
    max_rms: float = 10.0
    # training batches scanned for NaN/Inf besides the captured one (a bad sample is rarely
    # in the first batch); 0 scans only the captured batch
    scan_batches: int = 50
    # per-channel/feature metrics are logged for at most this many channels/features (the
    # table always has them all): a wide tabular set would flood the tracker otherwise
    max_metric_features: int = 64


@dataclass
class Snapshot:
    """What the model's forward received (its content tensor: ``input_ids``, ``pixel_values``
    or the first tensor argument) and the batch's labels."""

    x: Tensor  # on the CPU, detached: [B, ...]
    y: Tensor
    n_args: int  # positional + keyword arguments the forward got
    shapes: list[str]  # "arg0: float32[64, 1, 8, 8]", ... for every tensor argument


def capture(ctx: Context, model: nn.Module, batch: Batch) -> Snapshot:
    """Run ``model(x)`` once, as training would (train mode, no grad), and record its inputs
    with a forward pre-hook on the root module."""
    seen: dict[str, Any] = {}

    def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen["args"], seen["kwargs"] = args, kwargs

    x, y = batch
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model.train()
        with torch.no_grad():
            ctx.forward(model, x)
    finally:
        handle.remove()
    named = [(f"arg{i}", a) for i, a in enumerate(seen["args"])] + list(seen["kwargs"].items())
    tensors = [(k, v) for k, v in named if isinstance(v, Tensor)]
    if not tensors:
        raise ValueError("the model's forward received no tensor argument: nothing to show")
    shapes = [f"{k}: {str(v.dtype).replace('torch.', '')}{list(v.shape)}" for k, v in tensors]
    # keyword inputs: the content tensor (input_ids, pixel_values, ...), not whichever came
    # first (an attention_mask); positional ones: the first tensor argument
    shown = dict(tensors)[primary_key(dict(tensors))].detach().cpu()
    return Snapshot(shown, y.detach().cpu(), len(named), shapes)


def feature_axis(x: Tensor, kind: str) -> tuple[Tensor, str]:
    """[F, M] values per channel (images: dim 1) or feature (tabular: flattened trailing
    dims), and the word for one of them."""
    if kind == "image" and x.dim() == 4:
        return x.transpose(0, 1).reshape(x.shape[1], -1), "channel"
    if x.dim() == 1:
        return x.reshape(1, -1), "feature"
    return x.reshape(x.shape[0], -1).T, "feature"


def feature_names(ctx: Context, n: int, word: str) -> list[str]:
    names = ctx.data.feature_names if word == "feature" else None
    if names is not None and len(names) == n:
        return [str(s) for s in names]
    return [f"{word} {i}" for i in range(n)]


def column_stats(v: Tensor) -> dict[str, np.ndarray]:
    """Mean, std, min, max and RMS of each row of ``v`` [F, M] over its finite values."""
    a = v.double().numpy().copy()
    a[~np.isfinite(a)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row gives NaN: reported
        return {
            "mean": np.nanmean(a, 1),
            "std": np.nanstd(a, 1),
            "min": np.nanmin(a, 1),
            "max": np.nanmax(a, 1),
            "rms": np.sqrt(np.nanmean(a * a, 1)),
        }


def nonfinite_where(x: Tensor, names: list[str], kind: str, k: int = 5) -> str:
    """Where the NaN/Inf values are: 'example 3 (mean radius), example 9 (channel 0)'."""
    bad = ~torch.isfinite(x)
    places = []
    for idx in bad.nonzero()[:k].tolist():
        ex = idx[0]
        if kind == "image" and x.dim() == 4:
            places.append(f"example {ex} ({names[idx[1]]}, pixel {tuple(idx[2:])})")
        elif x.dim() == 2 and len(names) == x.shape[1]:
            places.append(f"example {ex} ({names[idx[1]]})")
        else:
            places.append(f"example {ex} at {tuple(idx[1:])}")
    rows = bad.reshape(len(x), -1).any(1).nonzero().reshape(-1).tolist()
    more = f"; {len(rows)} examples affected: {rows[:10]}{' ...' if len(rows) > 10 else ''}"
    return ", ".join(places) + more


def scan_nonfinite(ctx: Context, max_batches: int) -> tuple[int, int, int, int]:
    """(batches, examples, non-finite input values, non-finite labels) over the first
    ``max_batches`` training batches of one epoch, as the training loader yields them."""
    batches = examples = bad_x = bad_y = 0
    for x, y in ctx.batches(ctx.data.train_loader(generator=ctx.generator(_streams.SNAPSHOT))):
        if batches >= max_batches:
            break
        for t in _float_tensors(x):
            bad_x += int((~torch.isfinite(t)).sum())
        if isinstance(y, Tensor) and y.is_floating_point():
            bad_y += int((~torch.isfinite(y)).sum())
        batches += 1
        examples += len(y)
    return batches, examples, bad_x, bad_y


def _float_tensors(x: Any) -> list[Tensor]:
    """The floating-point tensors among inputs ``x`` (a tensor, a tuple or a dict)."""
    items = x.values() if isinstance(x, dict) else x if isinstance(x, tuple | list) else [x]
    return [t for t in items if isinstance(t, Tensor) and t.is_floating_point()]


def _label_text(ctx: Context, y: Tensor) -> list[str]:
    """One printable label per example: the class name, the decoded next tokens, or y."""
    names = ctx.data.class_names
    if ctx.task.name == "lm":
        return [decode(ctx, row) for row in y]
    if ctx.task.classification and names and y.dim() == 1:
        return [names[int(v)] if 0 <= int(v) < len(names) else str(v.item()) for v in y]
    first = y.reshape(len(y), -1)[:, 0].tolist()  # the first target of each example
    return [f"{v:.4g}" if isinstance(v, float) else str(v) for v in first]


def decode(ctx: Context, ids: Tensor) -> str:
    itos = ctx.data.itos
    if itos is None:
        return " ".join(str(int(i)) for i in ids.reshape(-1))
    return "".join(itos[int(i)] if 0 <= int(i) < len(itos) else "\ufffd" for i in ids.reshape(-1))


@register("input_snapshot", InputSnapshotParams, fast=True, order=25)
def input_snapshot(ctx: Context, p: InputSnapshotParams) -> CheckResult:
    """Decodes exactly what the model's forward receives (hooked), checks finite and scaled."""
    model = ctx.new_model()
    snap = capture(ctx, model, next(ctx.train_batches(seed_offset=_streams.SNAPSHOT)))
    x, y, kind = snap.x, snap.y, ctx.data.kind
    labels = _label_text(ctx, y)
    metrics: dict[str, float] = {"batch_size": float(len(x)), "n_forward_args": snap.n_args}
    tables: dict[str, dict[str, list[Any]]] = {}
    figures: dict[str, Figure] = {}
    problems: list[str] = []  # fail
    cautions: list[str] = []  # warn

    if kind == "tokens":
        _tokens(ctx, x, labels, p, metrics, tables, figures)
    else:
        names = _values(ctx, x, labels, p, metrics, tables, figures, cautions)
        n_bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
        metrics["nonfinite_inputs"] = float(n_bad)
        if n_bad:
            n_nan = int(torch.isnan(x).sum())
            problems.append(
                f"{n_bad} non-finite input values ({n_nan} NaN, {n_bad - n_nan} Inf) in the "
                f"batch the model received: {nonfinite_where(x, names, kind)}"
            )
    n_bad_y = int((~torch.isfinite(y)).sum()) if y.is_floating_point() else 0
    metrics["nonfinite_labels"] = float(n_bad_y)
    if n_bad_y:
        bad_rows = (~torch.isfinite(y.reshape(len(y), -1))).any(1).nonzero().reshape(-1)
        problems.append(f"{n_bad_y} non-finite labels (examples {bad_rows[:10].tolist()})")

    # integer inputs and labels (token ids, class indices) cannot hold NaN: no scan needed
    if p.scan_batches > 0 and (x.is_floating_point() or y.is_floating_point()):
        nb, ne, bx, by = scan_nonfinite(ctx, p.scan_batches)
        metrics.update({"scan_nonfinite_inputs": float(bx), "scan_nonfinite_labels": float(by)})
        if (bx or by) and not problems:
            problems.append(
                f"{bx} non-finite input values and {by} non-finite labels in the first {nb} "
                f"training batches ({ne} examples), though not in the batch shown"
            )

    shapes = "; ".join(snap.shapes)
    if problems:
        status = Status.FAIL
        msg = "; ".join(problems) + (
            ": find the sample(s) in the dataset (a division by zero, log of 0, a missing "
            "value read as NaN) and fix or drop them before training"
        )
    elif cautions:
        status, msg = Status.WARN, "; ".join(cautions)
    else:
        status = Status.PASS
        if kind == "tokens":
            msg = (
                f"token ids in [{metrics['min_id']:.0f}, {metrics['max_id']:.0f}] "
                f"({metrics['distinct_ids']:.0f} distinct) decoded beside their labels ({shapes})"
            )
        else:
            msg = (
                f"inputs finite, largest {_word(kind)} RMS {metrics['max_rms']:.3g} <= "
                f"{p.max_rms:g} ({shapes})"
            )
    if status != Status.PASS:
        msg += f" [forward received {shapes}]"
    return CheckResult(
        "input_snapshot",
        status,
        msg,
        metrics=metrics,
        figures=figures,
        tables=tables,
        value=metrics.get("max_rms"),
        threshold=f"finite, RMS <= {p.max_rms:g}" if kind != "tokens" else "",
    )


def _values(
    ctx: Context,
    x: Tensor,
    labels: list[str],
    p: InputSnapshotParams,
    metrics: dict[str, float],
    tables: dict[str, dict[str, list[Any]]],
    figures: dict[str, Figure],
    cautions: list[str],
) -> list[str]:
    """Images and tabular rows: statistics, the scale rule, a picture and tables. Returns
    the channel/feature names."""
    kind = ctx.data.kind
    per, word = feature_axis(x, kind)
    names = feature_names(ctx, per.shape[0], word)
    st = column_stats(per)
    tables["stats"] = {
        "columns": [word, "mean", "std", "min", "max", "rms"],
        "rows": [
            [n, *(_num(st[k][i]) for k in ("mean", "std", "min", "max", "rms"))]
            for i, n in enumerate(names)
        ],
    }
    for i, n in enumerate(names[: p.max_metric_features]):
        key = _key(n)
        for k in ("mean", "std", "min", "max"):
            metrics[f"{k}/{key}"] = float(st[k][i])
    finite = x[torch.isfinite(x)] if x.is_floating_point() else x.double()
    metrics.update(
        {
            "min": float(finite.min()) if finite.numel() else float("nan"),
            "max": float(finite.max()) if finite.numel() else float("nan"),
            "max_rms": float(np.nanmax(st["rms"])) if np.isfinite(st["rms"]).any() else 0.0,
        }
    )
    loud = [(n, float(r)) for n, r in zip(names, st["rms"], strict=True) if r > p.max_rms]
    if loud:
        worst = sorted(loud, key=lambda t: -t[1])[:3]
        hint = ""
        if kind == "image" and _raw_pixels(x):
            hint = " (integer values up to 255: raw 0-255 pixels)"
        cautions.append(
            f"inputs look unnormalised{hint}: {len(loud)} of {len(names)} {word}s have an RMS "
            f"above {p.max_rms:g} (worst {', '.join(f'{n} {r:.3g}' for n, r in worst)}; "
            "standardised inputs have RMS 1): standardise them with train-set statistics, "
            "(x - mean) / std" + (" (raw pixels: divide by 255 first)" if kind == "image" else "")
        )
    if kind == "image" and x.dim() in (3, 4):
        figures["inputs"] = image_grid(x[: p.n_show], labels[: p.n_show])
    else:
        figures["inputs"] = value_heatmap(per.T[: p.n_show], names, labels[: p.n_show])
        tables["rows"] = {
            "columns": ["example", *names, "label"],
            "rows": [
                [i, *(_num(v) for v in row.tolist()), labels[i]]
                for i, row in enumerate(per.T[: p.n_show])
            ],
        }
    return names


def _tokens(
    ctx: Context,
    x: Tensor,
    labels: list[str],
    p: InputSnapshotParams,
    metrics: dict[str, float],
    tables: dict[str, dict[str, list[Any]]],
    figures: dict[str, Figure],
) -> None:
    """Token ids: decoded text beside the labels (next tokens for a language model)."""
    texts = [decode(ctx, row) for row in x[: p.n_show]]
    metrics.update(
        {
            "min_id": float(x.min()),
            "max_id": float(x.max()),
            "distinct_ids": float(x.unique().numel()),
        }
    )
    if ctx.data.itos is not None:
        metrics["vocab_size"] = float(len(ctx.data.itos))
    tables["decoded"] = {
        "columns": ["example", "input", "label"],
        "rows": [[i, t, labels[i]] for i, t in enumerate(texts)],
    }
    figures["inputs"] = text_panel(texts, labels[: p.n_show])


def _word(kind: str) -> str:
    return "channel" if kind == "image" else "feature"


def _raw_pixels(x: Tensor) -> bool:
    v = x[torch.isfinite(x)] if x.is_floating_point() else x
    return bool(v.numel()) and float(v.max()) <= 255 and bool((v == v.round()).all())


def _num(v: float) -> float | None:
    """A JSON-safe table cell: NaN/Inf become None (JSON has no NaN)."""
    return float(f"{v:.5g}") if math.isfinite(v) else None


def _key(name: str) -> str:
    """A metric-key-safe name: 'mean radius' -> 'mean_radius'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"


# --- figures -----------------------------------------------------------------------------
def image_grid(x: Tensor, labels: list[str]) -> Figure:
    """The images as the model gets them, on ONE shared colour scale (its colour bar shows the
    raw values, so 0-255 or a shifted mean is visible); NaN/Inf pixels in red."""
    import matplotlib.pyplot as plt

    if x.dim() == 3:  # [B, H, W] -> [B, 1, H, W]
        x = x.unsqueeze(1)
    n, c = x.shape[0], x.shape[1]
    cols = min(n, 8)
    rows = max(1, math.ceil(n / cols))
    a = x.double().numpy()
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


def value_heatmap(rows: Tensor, names: list[str], labels: list[str]) -> Figure:
    """Tabular rows [N, F] as a heatmap, one row per example: an unscaled feature stands out."""
    import matplotlib.pyplot as plt

    a = np.ma.masked_invalid(rows.double().numpy())
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
