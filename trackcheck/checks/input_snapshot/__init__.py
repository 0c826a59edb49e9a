"""visualize just before the net: capture exactly what ``model(x)`` receives, decode it, and
check it is finite and on a sane scale.

A forward pre-hook on the root module records the arguments of the model's forward for one
training batch, fed as training feeds it (after the loader's collate and any batch-level
transform), so what is shown is what the network sees, not what the dataset was meant to
hold. The batch's labels are captured beside the inputs.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks.input_snapshot import _snapshot_views as views
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


@dataclass
class _Findings:
    """What the snapshot measured (metrics, tables, figures) and what is wrong with it."""

    metrics: dict[str, float]
    tables: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    figures: dict[str, plots.Deferred] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # fail
    cautions: list[str] = field(default_factory=list)  # warn


@register("input_snapshot", InputSnapshotParams, fast=True)
def input_snapshot(ctx: Context, p: InputSnapshotParams) -> CheckResult:
    """Decodes exactly what the model's forward receives (hooked), checks finite and scaled."""
    model = ctx.new_model()
    snap = capture(ctx, model, next(ctx.train_batches(seed_offset=_streams.SNAPSHOT)))
    return _judge(_measure(ctx, snap, p), snap, ctx.data.kind, p)


def _measure(ctx: Context, snap: Snapshot, p: InputSnapshotParams) -> _Findings:
    """Statistics, pictures and tables of the captured batch; NaN/Inf in it and in the
    first ``scan_batches`` training batches."""
    x, y, kind = snap.x, snap.y, ctx.data.kind
    labels = _label_text(ctx, y)
    found = _Findings({"batch_size": float(len(x)), "n_forward_args": snap.n_args})
    if kind == "tokens":
        _tokens(ctx, x, labels, p, found)
    else:
        names = _values(ctx, x, labels, p, found)
        n_bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
        found.metrics["nonfinite_inputs"] = float(n_bad)
        if n_bad:
            n_nan = int(torch.isnan(x).sum())
            found.problems.append(
                f"{n_bad} non-finite input values ({n_nan} NaN, {n_bad - n_nan} Inf) in the "
                f"batch the model received: {nonfinite_where(x, names, kind)}"
            )
    n_bad_y = int((~torch.isfinite(y)).sum()) if y.is_floating_point() else 0
    found.metrics["nonfinite_labels"] = float(n_bad_y)
    if n_bad_y:
        bad_rows = (~torch.isfinite(y.reshape(len(y), -1))).any(1).nonzero().reshape(-1)
        found.problems.append(f"{n_bad_y} non-finite labels (examples {bad_rows[:10].tolist()})")

    # integer inputs and labels (token ids, class indices) cannot hold NaN: no scan needed
    if p.scan_batches > 0 and (x.is_floating_point() or y.is_floating_point()):
        nb, ne, bx, by = scan_nonfinite(ctx, p.scan_batches)
        found.metrics.update(
            {"scan_nonfinite_inputs": float(bx), "scan_nonfinite_labels": float(by)}
        )
        if (bx or by) and not found.problems:
            found.problems.append(
                f"{bx} non-finite input values and {by} non-finite labels in the first {nb} "
                f"training batches ({ne} examples), though not in the batch shown"
            )
    return found


def _judge(found: _Findings, snap: Snapshot, kind: str, p: InputSnapshotParams) -> CheckResult:
    """FAIL on any NaN/Inf, WARN on unnormalised inputs, else PASS with the range seen."""
    metrics, shapes = found.metrics, "; ".join(snap.shapes)
    if found.problems:
        status = Status.FAIL
        msg = "; ".join(found.problems) + (
            ": find the sample(s) in the dataset (a division by zero, log of 0, a missing "
            "value read as NaN) and fix or drop them before training"
        )
    elif found.cautions:
        status, msg = Status.WARN, "; ".join(found.cautions)
    elif kind == "tokens":
        status = Status.PASS
        msg = (
            f"token ids in [{metrics['min_id']:.0f}, {metrics['max_id']:.0f}] "
            f"({metrics['distinct_ids']:.0f} distinct) decoded beside their labels ({shapes})"
        )
    else:
        status = Status.PASS
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
        figures=found.figures,
        tables=found.tables,
        value=metrics.get("max_rms"),
        threshold=f"finite, RMS <= {p.max_rms:g}" if kind != "tokens" else "",
    )


def _values(
    ctx: Context, x: Tensor, labels: list[str], p: InputSnapshotParams, found: _Findings
) -> list[str]:
    """Images and tabular rows: statistics, the scale rule, a picture and tables. Returns
    the channel/feature names."""
    kind = ctx.data.kind
    per, word = feature_axis(x, kind)  # [F, M]
    names = feature_names(ctx, per.shape[0], word)
    st = column_stats(per)
    found.tables["stats"] = views.stats_table(word, names, st)
    for i, n in enumerate(names[: p.max_metric_features]):
        key = _key(n)
        for k in ("mean", "std", "min", "max"):
            found.metrics[f"{k}/{key}"] = float(st[k][i])
    finite = x[torch.isfinite(x)] if x.is_floating_point() else x.double()
    found.metrics.update(
        {
            "min": float(finite.min()) if finite.numel() else float("nan"),
            "max": float(finite.max()) if finite.numel() else float("nan"),
            "max_rms": float(np.nanmax(st["rms"])) if np.isfinite(st["rms"]).any() else 0.0,
        }
    )
    loud = [(n, float(r)) for n, r in zip(names, st["rms"], strict=True) if r > p.max_rms]
    if loud:
        found.cautions.append(_scale_caution(x, kind, word, loud, len(names), p.max_rms))
    if kind == "image" and x.dim() in (3, 4):
        shown = x[: p.n_show].double().numpy()  # [n_show, (C,) H, W]
        found.figures["inputs"] = plots.deferred(views.image_grid, shown, labels[: p.n_show])
    else:
        rows = per.T[: p.n_show]  # [N, F]
        found.figures["inputs"] = plots.deferred(
            views.value_heatmap, rows.double().numpy(), names, labels[: p.n_show]
        )
        found.tables["rows"] = views.rows_table(rows, names, labels)
    return names


def _scale_caution(
    x: Tensor, kind: str, word: str, loud: list[tuple[str, float]], n_all: int, max_rms: float
) -> str:
    """The warning for channels/features whose RMS exceeds ``max_rms``: the worst three."""
    worst = sorted(loud, key=lambda t: -t[1])[:3]
    hint = ""
    if kind == "image" and _raw_pixels(x):
        hint = " (integer values up to 255: raw 0-255 pixels)"
    return (
        f"inputs look unnormalised{hint}: {len(loud)} of {n_all} {word}s have an RMS "
        f"above {max_rms:g} (worst {', '.join(f'{n} {r:.3g}' for n, r in worst)}; "
        "standardised inputs have RMS 1): standardise them with train-set statistics, "
        "(x - mean) / std" + (" (raw pixels: divide by 255 first)" if kind == "image" else "")
    )


def _tokens(
    ctx: Context, x: Tensor, labels: list[str], p: InputSnapshotParams, found: _Findings
) -> None:
    """Token ids: decoded text beside the labels (next tokens for a language model)."""
    texts = [decode(ctx, row) for row in x[: p.n_show]]
    found.metrics.update(
        {
            "min_id": float(x.min()),
            "max_id": float(x.max()),
            "distinct_ids": float(x.unique().numel()),
        }
    )
    if ctx.data.itos is not None:
        found.metrics["vocab_size"] = float(len(ctx.data.itos))
    found.tables["decoded"] = views.decoded_table(texts, labels)
    found.figures["inputs"] = plots.deferred(views.text_panel, texts, labels[: p.n_show])


def _word(kind: str) -> str:
    return "channel" if kind == "image" else "feature"


def _raw_pixels(x: Tensor) -> bool:
    v = x[torch.isfinite(x)] if x.is_floating_point() else x
    return bool(v.numel()) and float(v.max()) <= 255 and bool((v == v.round()).all())


def _key(name: str) -> str:
    """A metric-key-safe name: 'mean radius' -> 'mean_radius'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"
