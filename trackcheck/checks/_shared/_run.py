"""One seeded training run, many observers: the checks that watch a fresh model train with
the user's step and optimizer on the same batches read one run instead of each paying for
its own.

A check that reads the run registers an observer factory (``@observes(name)``) and calls
:func:`observed` for its finished observer. The first such call in a stage builds the run
with an observer for every check of the stage that reads it and has not run yet (the
runner puts the stage's checks and params in ``ctx.stage``; a check called on its own gets
a run with its observer alone), trains until every observer has decided, and caches the
others' observers on the Context for their checks: check order does not matter, and a check
run alone still works.

The run: ``ctx.new_model()`` (the stage seed), ``ctx.optimizer``, batches from the stream
``_streams.LOSS_DECREASES`` over the training split minus the slice input_independent holds
out (:func:`batches`; the bigger model of loss_decreases trains on the same ones),
``ctx.train_step`` per step (the user's own step when one is given). Per step, each
observer still undecided gets ``before_step`` and ``after_step`` around the training step
(hooks only: no forward of their own there), then ``observe``, where it may forward the
model (held-out predictions) and says whether it has decided. A non-finite training loss
ends the run for everyone, as each check's own loop did.

Observers must not change the trajectory: each ``start``/``observe``/``finish`` runs with
torch's random state forked and the model's buffers (BatchNorm's running statistics)
restored after, so the run's weights are the same whichever observers read it (a check's
numbers do not depend on which other checks were selected). Their work's passes and time
are counted to their own check when it collects them; the training steps themselves are
the stage's shared row (``ctx.meter.shared``, ``Report.shared``).

An observer that raises is dropped from the run and its check gets the exception when it
asks; an exception of the training step itself reaches every observer's check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import torch
from torch import nn

from trackcheck.checks._shared import _streams
from trackcheck.context import Context
from trackcheck.pipeline import Batch

# the cache key on ``ctx.cache``: a list of (check name, params, finished observer)
_KEY = "shared_run"
# the row under which the training steps' passes and time are reported
ROW = "shared training run"
# the check whose held-out training slice the run never trains on (:func:`batches`)
HOLDS_OUT = "input_independent"


@dataclass
class Cost:
    """Passes and time, as the Meter counts them."""

    n_forward: int = 0
    n_backward: int = 0
    model_s: float = 0.0
    wall_s: float = 0.0

    def add(self, other: Cost, sign: int = 1) -> None:
        self.n_forward += sign * other.n_forward
        self.n_backward += sign * other.n_backward
        self.model_s += sign * other.model_s
        self.wall_s += sign * other.wall_s


@dataclass
class Run:
    """What observers read: the model while it trains, its optimizer, and the training
    loss before each step so far (``losses[i]``: step i)."""

    ctx: Context
    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    losses: list[float] = field(default_factory=list)
    batch: Batch | None = None  # the current step's batch (an arm beside the run reuses it)


class Observer:
    """One check's instrument on the shared run. ``budget``: the most steps it may need
    (the run never goes beyond the largest). Subclasses override what they need."""

    budget: int = 0

    def __init__(self) -> None:
        self.decided = False
        self.error: BaseException | None = None
        self.cost = Cost()  # its own work's passes and time (its forwards, not the steps)
        self.nonfinite: tuple[bool, Batch | None] = (False, None)

    def start(self, run: Run) -> None:
        """Before the first step (the model at init, in train mode)."""

    def before_step(self, run: Run, step: int) -> None:
        """Just before training step ``step`` (no forward here)."""

    def after_step(self, run: Run, step: int, loss: float) -> None:
        """Just after it, before any observer forwards the model (no forward here)."""

    def observe(self, run: Run, step: int, loss: float) -> bool:
        """After step ``step`` (its loss before the step: ``loss``); True once decided."""
        return True

    def finish(self, run: Run) -> None:
        """Once decided (or the run ended): read what is left, drop every reference to the
        model (it is freed when the run ends)."""


Factory = Callable[[Context, Any], Observer]
_FACTORIES: dict[str, Factory] = {}
F = TypeVar("F", bound=Factory)


def looks(every: int, budget: int, cap: int) -> list[int]:
    """The steps at which an observer decides: every ``every`` steps up to ``budget`` (and at
    ``budget``), then twice the steps each time up to ``cap``: the extension a check gives a
    run that is undecided for want of training."""
    marks = list(range(every, budget, every)) + [budget]
    while marks[-1] < cap:
        marks.append(min(2 * marks[-1], cap))
    return marks


def observes(name: str) -> Callable[[F], F]:
    """Register ``factory(ctx, params) -> Observer`` as check ``name``'s observer."""

    def deco(factory: F) -> F:
        _FACTORIES[name] = factory
        return factory

    return deco


def observed(ctx: Context, name: str, params: Any) -> Observer:
    """Check ``name``'s finished observer of the stage's shared run (``params``: the
    check's); its passes and time are added to the check's count. Raises what the observer
    or the training step raised."""
    found = _take(ctx, name, params)
    if found is None:
        wanted = {name: params} | _stage_observers(ctx, name)
        _train(ctx, {n: _FACTORIES[n](ctx, p) for n, p in wanted.items()}, wanted)
        found = _take(ctx, name, params)
        assert found is not None
    m = ctx.meter
    m.n_forward += found.cost.n_forward
    m.n_backward += found.cost.n_backward
    m.model_s += found.cost.model_s
    m.shift_s += found.cost.wall_s
    if found.nonfinite[0]:
        ctx.note_nonfinite(found.nonfinite[1])
    if found.error is not None:
        raise found.error
    return found


def _take(ctx: Context, name: str, params: Any) -> Observer | None:
    """The cached observer of ``name`` with these params, removed from the cache."""
    cached: list[tuple[str, Any, Observer]] = ctx.cache.setdefault(_KEY, [])
    for i, (n, p, o) in enumerate(cached):
        if n == name and p == params:
            del cached[i]
            return o
    return None


def _stage_observers(ctx: Context, name: str) -> dict[str, Any]:
    """The stage's other checks that read the run and are still to come (not run yet, not
    served by an earlier run)."""
    done = {r.name for r in ctx.finished}
    waiting = {n for n, _, _ in ctx.cache.get(_KEY, [])}
    return {
        n: p
        for n, p in ctx.stage.items()
        if n in _FACTORIES and n != name and n not in done and n not in waiting
    }


def _train(ctx: Context, observers: dict[str, Observer], params: dict[str, Any]) -> None:
    """Train one fresh model until every observer has decided; cache the observers. The
    steps' passes and time leave the calling check's count for ``ctx.meter.shared``."""
    m = ctx.meter
    before = Cost(m.n_forward, m.n_backward, m.model_s, time.perf_counter())
    prior = ctx.take_nonfinite()  # the calling check's own, put back after the run
    steps, ok = 0, False
    try:
        steps = _steps(ctx, list(observers.values()), params.get(HOLDS_OUT))
        ok = True
    except Exception as e:  # noqa: BLE001 - building the model: every observer's check's error
        _fail(list(observers.values()), e)
        ok = True
    finally:
        if prior[0]:
            ctx.note_nonfinite(prior[1])
        spent = Cost(
            m.n_forward - before.n_forward,
            m.n_backward - before.n_backward,
            m.model_s - before.model_s,
            time.perf_counter() - before.wall_s,
        )
        m.n_forward, m.n_backward, m.model_s = before.n_forward, before.n_backward, before.model_s
        m.shift_s -= spent.wall_s
        for o in observers.values():
            spent.add(o.cost, sign=-1)  # counted to each observer's check when it collects
        row = m.shared.setdefault(ROW, {"runs": 0, "steps": 0, "fwd": 0, "bwd": 0})
        row.setdefault("model_s", 0.0)
        row.setdefault("time_s", 0.0)
        row["runs"] += 1
        row["steps"] += steps
        row["fwd"] += spent.n_forward
        row["bwd"] += spent.n_backward
        row["model_s"] += spent.model_s
        row["time_s"] += spent.wall_s
        if ok:  # an interrupt caches nothing: no observer is left half-run
            cached = ctx.cache.setdefault(_KEY, [])
            cached += [(n, params[n], o) for n, o in observers.items()]


def _steps(ctx: Context, observers: list[Observer], holdout: Any = None) -> int:
    """The run itself (``holdout``: input_independent's params, see :func:`batches`);
    returns the number of steps taken."""
    run = Run(ctx, ctx.new_model())
    run.model.train()
    try:
        for o in observers:
            _guarded(run, o, partial(o.start, run))
        live = [o for o in observers if o.error is None]
        try:
            run.optimizer = ctx.optimizer(run.model)
        except Exception as e:  # noqa: BLE001 - reaches every observer's check as its error
            _fail(live, e)
            return 0
        stream = batches(ctx, holdout)
        budget = max((o.budget for o in live), default=0)
        for step in range(budget):
            live = [o for o in live if not o.decided]
            if not live:
                break
            for o in live:
                o.before_step(run, step)
            try:
                run.batch = next(stream)
                loss = ctx.train_step(run.model, run.batch, run.optimizer)
            except Exception as e:  # noqa: BLE001 - the user's step: every observer's error
                _fail(live, e)
                return step
            run.losses.append(loss)
            seen = ctx.take_nonfinite()
            for o in live:
                o.after_step(run, step, loss)
                if seen[0] and not o.nonfinite[0]:
                    o.nonfinite = seen
            for o in live:
                done = _guarded(run, o, partial(o.observe, run, step, loss))
                o.decided = o.decided or bool(done) or step + 1 >= o.budget
            if not math.isfinite(loss):
                break
        return len(run.losses)
    finally:
        for o in observers:  # also after an error: it drops its references to the model
            _guarded(run, o, partial(o.finish, run), always=True)
        run.model = run.optimizer = run.batch = None  # type: ignore[assignment]


def batches(ctx: Context, holdout: Any = None) -> Iterator[Batch]:
    """The shared run's training batches: the stream ``_streams.LOSS_DECREASES`` over the
    training split minus the slice that input_independent holds out from training and judges
    on (its real-input arm reads this run). The slice is left out whichever checks are
    selected, so a check's numbers do not depend on the selection: it follows
    input_independent's params (``holdout``; else the stage's; else their defaults)."""
    from trackcheck.checks.input_independent._heldout import training_batches
    from trackcheck.registry import get_check

    p = holdout or ctx.stage.get(HOLDS_OUT) or get_check(HOLDS_OUT).params()
    return training_batches(ctx, p.train_holdout, p.max_eval, _streams.LOSS_DECREASES)


def _fail(observers: list[Observer], e: BaseException) -> None:
    for o in observers:
        if o.error is None:
            o.error = e
        o.decided = True


@contextmanager
def _untouched(run: Run) -> Any:
    """torch's random state and the model's buffers (and train mode) as they were."""
    model = run.model
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [run.ctx.device] if run.ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, kept in buffers:
                    b.copy_(kept)
            model.train()


def _guarded(run: Run, o: Observer, fn: Callable[[], Any], always: bool = False) -> Any:
    """``fn()`` (one of ``o``'s methods) leaving the trajectory untouched, its passes and
    time counted to ``o``, a non-finite loss it saw noted for its check; an exception makes
    ``o`` decided with that error (returns False then). An observer that already failed is
    left alone unless ``always``."""
    if o.error is not None and not always:
        return False
    m, t0 = run.ctx.meter, time.perf_counter()
    f0, b0, s0 = m.n_forward, m.n_backward, m.model_s
    try:
        with _untouched(run):
            return fn()
    except Exception as e:  # noqa: BLE001 - that check's error, not the run's
        o.error = o.error or e
        o.decided = True
        return False
    finally:
        o.cost.add(Cost(m.n_forward - f0, m.n_backward - b0, m.model_s - s0))
        o.cost.wall_s += time.perf_counter() - t0
        seen = run.ctx.take_nonfinite()
        if seen[0] and not o.nonfinite[0]:
            o.nonfinite = seen
