"""The gradient_flow check's probe: a few training steps with hooks that record, per weight
tensor, the gradient's mean and max |value|, the update-to-weight ratio, and per ReLU-family
activation the units that never fire; plus which parameters never get a gradient.

Everything is recorded as device tensors and read back once at the end (no sync per step).
Hooks on the parameters (not ``.grad`` after the step) see the gradient whatever the user's
step does with ``.grad`` afterwards (``zero_grad`` after stepping).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trackcheck.checks._shared._run import Observer, Run

# units that output exactly 0 below a threshold: the ones that can die
RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


@dataclass
class Trace:
    """What a few steps recorded. Layers are the weight tensors (ndim >= 2: Linear, conv,
    embedding, Conv1D), in forward order (the first call of the module that holds them)."""

    layers: list[str]
    mean_abs: np.ndarray  # [S, L] mean |grad| per step (embeddings: over rows that got one)
    max_abs: np.ndarray  # [S, L]
    update: np.ndarray  # [S, L] ||w_after - w_before|| / ||w_before|| (nan where ||w|| = 0)
    grad_norm: np.ndarray  # [S] the norm of the whole gradient (all trainable parameters)
    no_grad: list[str]  # trainable parameters whose gradient was None or 0 on every step
    not_called: list[str]  # ... of those, the ones whose module never ran in forward
    dead: dict[str, float] = field(default_factory=dict)  # activation site -> dead share
    units: dict[str, int] = field(default_factory=dict)  # activation site -> units
    samples: dict[str, int] = field(default_factory=dict)  # site -> values seen per unit
    losses: list[float] = field(default_factory=list)


class _Probe:
    """Hooks on one model: parameter gradients, module call order, activation sites."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
        self.owner = _owners(model)  # id(param) -> names of the modules holding it
        self.order: dict[str, int] = {}  # module name -> first call position
        self.pending: list[Tensor | None] = [None] * len(self.params)
        self.calls: dict[str, int] = {}  # activation module -> calls in this forward
        self.active: dict[str, list[Tensor]] = {}  # site -> [units] bool, per unit dim
        self.samples: dict[str, int] = {}  # site -> examples x positions seen per unit
        self.handles: list[Any] = []
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        self.sparse = [id(q) in embeddings for _, q in self.params]

    def attach(self) -> None:
        names = {m: n for n, m in self.model.named_modules()}
        for i, (_, q) in enumerate(self.params):
            self.handles.append(q.register_hook(lambda g, i=i: self._grad(i, g)))
        for m, name in names.items():
            self.handles.append(m.register_forward_pre_hook(self._called(name)))
            if isinstance(m, RELU_FAMILY):
                self.handles.append(m.register_forward_hook(self._fired(name)))
        self.handles.append(self.model.register_forward_pre_hook(lambda *_: self.calls.clear()))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()

    def _called(self, name: str) -> Any:
        def hook(_m: nn.Module, _args: Any) -> None:
            self.order.setdefault(name, len(self.order))

        return hook

    def _grad(self, i: int, g: Tensor) -> None:
        """Per backward: [sum |g|, max |g|, sum g^2, entries counted] for parameter i."""
        a = g.detach().abs().float()
        count = a.new_tensor(float(a.numel()))
        if self.sparse[i] and a.dim() >= 2:  # an embedding: only the rows it looked up
            count = (a.flatten(1).amax(1) > 0).sum() * float(a[0].numel())
        s = torch.stack([a.sum(), a.amax(), a.pow(2).sum(), count])
        prev = self.pending[i]  # several backward passes in one step (accumulation): add
        if prev is not None:
            s = torch.stack([prev[0] + s[0], prev[1].maximum(s[1]), prev[2] + s[2], s[3]])
        self.pending[i] = s

    def _fired(self, name: str) -> Any:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            if not isinstance(out, Tensor) or out.dim() < 2 or not out.is_floating_point():
                return
            k = self.calls.get(name, 0)
            self.calls[name] = k + 1
            site = name if k == 0 else f"{name}#{k}"  # a module called twice: two sites
            on = out.detach() > 0
            # the unit axis: features (dim -1) of [B, F] and [B, T, F]; channels (dim 1) of
            # [B, C, H, W]; a 3-d output may be either, so both are kept (the less dead wins)
            dims = [-1] if out.dim() == 2 else [1] if out.dim() >= 4 else [1, -1]
            masks = [on.movedim(d, -1).reshape(-1, on.shape[d]).any(0) for d in dims]
            seen = self.active.get(site)
            self.active[site] = (
                masks if seen is None else [a | b for a, b in zip(seen, masks, strict=True)]
            )
            per_unit = out.numel() // out.shape[dims[0]]  # examples x positions
            self.samples[site] = self.samples.get(site, 0) + per_unit

        return hook

    def take_step(self) -> list[Tensor | None]:
        out, self.pending = self.pending, [None] * len(self.params)
        return out


def _owners(model: nn.Module) -> dict[int, list[str]]:
    """id(parameter) -> the names of every module that holds it directly (tied weights:
    several)."""
    owners: dict[int, list[str]] = {}
    for name, m in model.named_modules():
        for q in m.parameters(recurse=False):
            owners.setdefault(id(q), []).append(name)
    return owners


@contextmanager
def probing(model: nn.Module) -> Iterator[_Probe]:
    probe = _Probe(model)
    probe.attach()
    try:
        yield probe
    finally:
        probe.detach()


class FlowObserver(Observer):
    """The probe on the shared training run (checks/_shared/_run.py): the hooks are on
    only during the first ``steps`` training steps themselves (no other observer's forward
    is recorded); ``trace`` and ``finite`` are set once it has decided."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.budget = max(1, steps)
        self.trace: Trace | None = None
        self.finite = True
        self._probe: _Probe | None = None
        self._idx: list[int] = []
        self._before: list[Tensor] = []
        self._per_step: list[list[Tensor | None]] = []
        self._updates: list[Tensor] = []
        self._losses: list[float] = []

    def start(self, run: Run) -> None:
        self._probe = _Probe(run.model)
        self._idx = [i for i, (_, q) in enumerate(self._probe.params) if q.dim() >= 2]

    def before_step(self, run: Run, step: int) -> None:
        assert self._probe is not None
        self._before = [self._probe.params[i][1].detach().clone() for i in self._idx]
        self._probe.attach()

    def after_step(self, run: Run, step: int, loss: float) -> None:
        probe = self._probe
        assert probe is not None
        probe.detach()
        probe.handles.clear()
        self._losses.append(loss)
        self._per_step.append(probe.take_step())
        self._updates.append(_update_ratios([probe.params[i][1] for i in self._idx], self._before))

    def observe(self, run: Run, step: int, loss: float) -> bool:
        return not np.isfinite(loss)

    def finish(self, run: Run) -> None:
        if self._probe is not None:
            self._probe.detach()
            self.trace = _trace(self._probe, self._idx, self._per_step, self._updates, self._losses)
            self.finite = bool(np.isfinite(self._losses).all())
        self._probe, self._before = None, []  # the model is freed with the run


@torch.no_grad()
def _update_ratios(weights: list[nn.Parameter], before: list[Tensor]) -> Tensor:
    """[L] ||w - w_before|| / ||w_before||, nan for a zero weight (nothing to compare to)."""
    if not weights:
        return torch.zeros(0)
    num = torch.stack(
        [(w.detach() - b).float().norm() for w, b in zip(weights, before, strict=True)]
    )
    den = torch.stack([b.float().norm() for b in before])
    return torch.where(den > 0, num / den, torch.full_like(den, float("nan")))


def _trace(
    probe: _Probe,
    idx: list[int],
    per_step: list[list[Tensor | None]],
    updates: list[Tensor],
    losses: list[float],
) -> Trace:
    """The recorded tensors read back (one transfer), layers sorted into forward order."""
    n = len(probe.params)
    zero = torch.zeros(4)
    stats = torch.stack(
        [torch.stack([(s.cpu() if s is not None else zero) for s in step]) for step in per_step]
    ).double()  # [S, P, 4]: sum |g|, max |g|, sum g^2, entries
    if not per_step or n == 0:
        stats = torch.zeros(len(per_step), n, 4, dtype=torch.float64)
    got = (stats[..., 1] > 0).any(0)  # [P] a nonzero gradient on some step
    names = [name for name, _ in probe.params]
    no_grad = [names[i] for i in range(n) if not bool(got[i])]
    called = set(probe.order)
    not_called = [
        names[i]
        for i in range(n)
        if not bool(got[i]) and not any(o in called for o in probe.owner[id(probe.params[i][1])])
    ]
    first = [_first_call(probe, probe.params[i][1]) for i in idx]
    order = sorted(range(len(idx)), key=lambda k: (first[k], k))
    sel = [idx[k] for k in order]
    mean = (stats[..., 0] / stats[..., 3].clamp(min=1))[:, sel].numpy()
    upd = torch.stack([u.cpu() for u in updates]).double()[:, order].numpy() if updates else None
    dead, units = _dead(probe)
    return Trace(
        layers=[names[i] for i in sel],
        mean_abs=mean,
        max_abs=stats[..., 1][:, sel].numpy(),
        update=upd if upd is not None else np.zeros((0, len(sel))),
        grad_norm=stats[..., 2].sum(1).sqrt().numpy(),
        no_grad=no_grad,
        not_called=not_called,
        dead=dead,
        units=units,
        samples=dict(probe.samples),
        losses=losses,
    )


def _first_call(probe: _Probe, q: nn.Parameter) -> int:
    calls = [probe.order[o] for o in probe.owner.get(id(q), []) if o in probe.order]
    return min(calls, default=len(probe.order))  # never called: at the end


def _dead(probe: _Probe) -> tuple[dict[str, float], dict[str, int]]:
    """Per activation site, the share of units that never fired on any step's batch (the
    less dead of the two readings of a 3-d output), and its unit count."""
    dead, units = {}, {}
    for site, masks in probe.active.items():
        shares = [float((~m).float().mean()) for m in masks]
        k = int(np.argmin(shares))
        dead[site], units[site] = shares[k], int(masks[k].numel())
    return dead, units
