"""Dependency maps by backprop, shared by ``batch_independence`` and ``causality``.

Karpathy's tip: "set the loss to be something trivial like the sum of all outputs of example
i, run the backward pass all the way to the input, and ensure that you get a non-zero
gradient only on the i-th input". Here that is done for every i at once: one forward, then
one vector-Jacobian product per output unit (example or position), batched with
``torch.func.vmap``. The result is a map ``M[i, j]`` = norm of the gradient that output unit
i sends to input unit j.

Two details make the map trustworthy:

* The "sum of outputs" is a *randomly weighted* sum. A plain sum can cancel: softmax outputs
  sum to 1 for every input, so their sum has zero gradient everywhere and would look
  independent of everything. A Gaussian weighting has zero gradient only where the output
  truly does not depend on the input (with probability 1).
* Token ids are integers and have no gradient. For those we differentiate at the output of
  the ``nn.Embedding`` that reads the ids: a forward hook replaces that output by a tensor
  we own, so the rest of the model runs unchanged (no layer is swapped or removed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from trackcheck import plots
from trackcheck.context import Meter
from trackcheck.core import CheckResult, SkipCheck, Status
from trackcheck.pipeline import PipelineError, primary, replace_primary

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class DiffPoint:
    """The model as a function of a float tensor we can differentiate against."""

    fn: Callable[[Tensor], Tensor]  # h -> the model's output on the original input
    h: Tensor  # the point: the input itself, or the embedding's output [B, T, C]
    where: str  # for messages: "the input" or "the output of nn.Embedding 'tok'"


def differentiable_input(model: nn.Module, forward: Callable[[Any], Tensor], x: Any) -> DiffPoint:
    """The map is taken at the inputs' content tensor (``pipeline.primary``: the tensor
    itself, ``pixel_values``, ``input_ids``, ...). Float content is used as it is; integer
    content (token ids) is replaced by the output of the first ``nn.Embedding`` called on a
    tensor of its shape. ``forward(x)`` is the model's prediction for inputs ``x``."""
    try:
        t = primary(x)
    except PipelineError as e:
        raise SkipCheck(f"dependency maps need an input tensor: {e}") from e
    if t.is_floating_point():
        return DiffPoint(lambda h: forward(replace_primary(x, h)), t.detach(), "the input")
    name, emb, h0, swapped = _find_embedding(model, forward, x, t)
    if swapped:  # a sequence-first model embeds ids [T, B]: the point is kept [B, T, C]
        h0 = h0.transpose(0, 1)

    def fn(h: Tensor) -> Tensor:
        with _replace_output(emb, h.transpose(0, 1) if swapped else h):
            return forward(x)

    return DiffPoint(fn, h0, f"the output of nn.Embedding {name!r}")


def _find_embedding(
    model: nn.Module, forward: Callable[[Any], Tensor], inputs: Any, x: Tensor
) -> tuple[str, nn.Module, Tensor, bool]:
    """One probe forward: the embedding that reads the ids ``x`` (the token table), and its
    output there (detached). Preferred: the first one fed ``x`` itself (or equal values);
    else the first fed a tensor of x's shape. With one sequence a position table fed
    ``arange(T)`` [1, T], or a token-type table fed zeros, has x's shape too, and a model may
    call those first (Hugging Face BERT calls the token-type table after the word table)."""
    # (reads x, name, module, output, fed x's [T, B] transpose: a sequence-first model)
    found: list[tuple[bool, str, nn.Module, Tensor, bool]] = []
    xt = x.transpose(0, 1) if x.dim() == 2 else None

    def record(name: str) -> Callable[..., None]:
        def hook(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            a = args[0] if args else None
            if not isinstance(a, Tensor) or not isinstance(out, Tensor):
                return
            for ref, swapped in ((x, False), (xt, True)):  # fed x itself (or equal values)
                if ref is not None and a.shape == ref.shape:
                    if a is ref or (a.dtype == ref.dtype and bool(torch.equal(a, ref))):
                        found.append((True, name, m, out.detach(), swapped))
                        return
            for ref, swapped in ((x, False), (xt, True)):  # else fed a tensor of its shape
                if ref is not None and a.shape == ref.shape:
                    found.append((False, name, m, out.detach(), swapped))
                    return

        return hook

    embeddings = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    handles = [m.register_forward_hook(record(n)) for n, m in embeddings]
    try:
        with torch.no_grad():
            forward(inputs)
    finally:
        for hd in handles:
            hd.remove()
    if not found:
        raise SkipCheck(
            f"the input is {x.dtype} (no gradient) and no nn.Embedding module is called on "
            f"it (embeddings found: {[n for n, _ in embeddings] or 'none'}): use an "
            "nn.Embedding module for the token table so gradients can be taken at its output"
        )
    best = next((f for f in found if f[0]), found[0])
    return best[1], best[2], best[3], best[4]


@contextmanager
def _replace_output(module: nn.Module, h: Tensor) -> Iterator[None]:
    """While active, ``module`` returns ``h`` (same shape) instead of its own output."""

    def hook(_m: nn.Module, _args: Any, out: Any) -> Any:
        return h if isinstance(out, Tensor) and out.shape == h.shape else None

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# elements of one chunk of cotangents plus gradients (32M: 128 MB in float32), so that a
# long sequence or a large vocabulary is charted chunk by chunk instead of all at once
CHUNK_ELEMENTS = 2**25


def dependency_map(point: DiffPoint, dim: int, seed: int, meter: Meter | None = None) -> Tensor:
    """``M[i, j]``: norm of the gradient of a random weighting of output unit i with respect
    to input unit j, units indexed along ``dim`` of both the output and ``point.h`` (dim 0:
    examples; dim 1: positions). Returns [n_out, n_in] float64 on the CPU. ``meter`` times
    the batched VJPs as model time (one backward pass per chunk)."""
    meter = meter or Meter()
    out, vjp_fn, batched = _vjp(point.fn, point.h)
    if not isinstance(out, Tensor) or out.dim() <= dim:
        shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"the model output should be a tensor with a unit axis {dim}: {shape}")
    n = out.shape[dim]
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(out.shape, generator=g).to(out)  # random, so sums cannot cancel
    select = torch.eye(n, dtype=out.dtype, device=out.device)
    shape = [-1] + [1] * out.dim()
    shape[dim + 1] = n
    chunk = max(1, CHUNK_ELEMENTS // (out.numel() + point.h.numel()))
    rows = []
    for start in range(0, n, chunk):
        # one cotangent per output unit i: the weights on unit i, zero elsewhere
        cotangents = weights.unsqueeze(0) * select[start : start + chunk].reshape(shape)
        with meter.measure(backward=1):
            grads = _vjps(vjp_fn, cotangents, batched).detach()
        grads = grads.movedim(dim + 1, 1)  # [chunk, n_in, ...]
        norms = grads.reshape(len(grads), grads.shape[1], -1).double().norm(dim=-1)
        rows.append(norms.cpu())  # [chunk, n_in]
    return torch.cat(rows)


def _vjp(
    fn: Callable[[Tensor], Tensor], h: Tensor
) -> tuple[Any, Callable[[Tensor], tuple[Tensor, ...]], bool]:
    """(output, its vjp function, whether vmap may batch it). torch.func's transform where
    the forward allows it; plain autograd where it does not (pack_padded_sequence reads the
    data pointer of its input, which a functorch-wrapped tensor has none of): one backward
    per cotangent then, the graph kept between them."""
    try:
        out, vjp_fn = torch.func.vjp(fn, h)[:2]
        return out, vjp_fn, True
    except RuntimeError:
        leaf = h.detach().requires_grad_(True)
        with torch.enable_grad():
            out = fn(leaf)

        def grad_fn(c: Tensor) -> tuple[Tensor, ...]:
            (g,) = torch.autograd.grad(out, leaf, c, retain_graph=True, allow_unused=True)
            return (torch.zeros_like(leaf) if g is None else g,)

        return out, grad_fn, False


def _vjps(
    vjp_fn: Callable[[Tensor], tuple[Tensor, ...]], cotangents: Tensor, batched: bool = True
) -> Tensor:
    """vjp_fn applied to each cotangent [k, *out.shape] -> [k, *h.shape], batched by vmap
    where ``batched``."""
    if not batched:
        return torch.stack([vjp_fn(c)[0] for c in cotangents])
    try:
        with warnings.catch_warnings():
            # ops without a batching rule (CPU attention) fall back to a loop: slower, correct
            warnings.filterwarnings("ignore", message="There is a performance drop")
            return torch.func.vmap(vjp_fn)(cotangents)[0]
    except RuntimeError:  # an op vmap cannot batch at all: one backward per unit instead
        return torch.stack([vjp_fn(c)[0] for c in cotangents])


def zero_tolerance(dtype: torch.dtype, given: float | None) -> float:
    """The relative size below which a gradient counts as zero: the dtype's machine epsilon
    unless given. A product with a zero cotangent is exactly 0 in any dtype, so a model with
    no path between two units gives exactly 0; anything under one rounding step of the
    largest gradient cannot be told apart from rounding."""
    return float(given) if given is not None else float(torch.finfo(dtype).eps)


def unusable_reason(m: Tensor, where: str, what: str) -> str | None:
    """Why map ``m`` cannot chart ``what`` (a failure message), or None when it can."""
    if not bool(torch.isfinite(m).all()):
        return (
            f"gradients at {where} are NaN/Inf, so {what} cannot be charted: the forward or "
            "backward overflows (log of 0, division by a zero norm, huge init?)"
        )
    if float(m.max()) == 0:
        return (
            f"no output depends on {where} (every gradient is exactly 0), so {what} cannot "
            "be charted: the input path is cut (.detach(), torch.no_grad(), .data) or the "
            "model ignores its input"
        )
    return None


def map_result(
    check: str,
    m: Tensor,
    what: str,
    problem: str,
    passed: str,
    *,
    where: str,
    metrics: dict[str, float],
    figure: plots.Deferred,
    value: float,
    threshold: str,
) -> CheckResult:
    """The verdict of a dependency-map check: FAIL when the map cannot chart ``what``
    (``unusable_reason``) or ``problem`` is set, else PASS with ``passed``; the map is
    logged as ``gradient_map`` either way."""
    why = unusable_reason(m, where, what)
    if why is not None or problem:
        status, msg = Status.FAIL, why or problem
    else:
        status, msg = Status.PASS, passed
    return CheckResult(
        check,
        status,
        msg,
        metrics=metrics,
        figures={"gradient_map": figure},
        value=value,
        threshold=threshold,
    )


def pairs(mask: Tensor, k: int) -> list[tuple[int, int]]:
    """The first ``k`` (row, column) positions where ``mask`` is true, row-major."""
    return [(int(i), int(j)) for i, j in mask.nonzero().tolist()[:k]]


def heatmap(
    m: Tensor, bad: Tensor, title: str, xlabel: str, ylabel: str, diagonal: bool = False
) -> plots.Deferred:
    """:func:`draw_heatmap` of map ``m`` [n_out, n_in] and its violations ``bad`` (same
    shape, bool), drawn later."""
    args = (m.double().numpy(), bad.numpy(), title, xlabel, ylabel, diagonal)
    return plots.deferred(draw_heatmap, *args)


def draw_heatmap(
    m: np.ndarray, bad: np.ndarray, title: str, xlabel: str, ylabel: str, diagonal: bool
) -> Figure:
    """A dependency map as log10(gradient norm / largest norm); exact zeros white, the
    entries judged as violations marked with red crosses."""
    from matplotlib import colormaps

    rel = m / m.max() if float(m.max()) > 0 else m
    pos = rel > 0
    logs = np.ma.masked_where(~pos, np.log10(np.where(pos, rel, 1.0)))
    floor = min(float(logs.min()), -1.0) if pos.any() else -1.0
    # the axes as tall as the map's shape asks (square cells for a square map), at least as
    # tall as the colour bar's label, at most 4 inches; top: the two-line title
    w_in = 2.6
    h_in = min(max(w_in * m.shape[0] / max(m.shape[1], 1), 2.6), 4.0)
    left, bottom, right, top = 0.65, 0.55, 1.05, 0.45
    fig, ax = plots.figure(
        left + w_in + right, bottom + h_in + top, left=left, bottom=bottom, right=right, top=top
    )
    cmap = colormaps["viridis"].with_extremes(bad="white")
    im = ax.imshow(logs, cmap=cmap, vmin=floor, vmax=0.0, interpolation="nearest", aspect="auto")
    plots.colorbar(fig, ax, im, "log10(grad norm / max); white = exactly 0")
    if diagonal:
        n = max(m.shape)
        ax.plot([-0.5, n - 0.5], [-0.5, n - 0.5], color="k", lw=0.6, ls="--")
    rows, cols = np.nonzero(bad)
    if len(rows):
        ax.scatter(cols, rows, marker="x", color="red", s=14, lw=1, label="violation")
        ax.legend(fontsize=7, loc="lower left")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.title.set_fontsize(9)
    return fig
