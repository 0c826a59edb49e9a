"""fix random seed: two runs with the same seed see the same batches, the same per-step losses
and end at the same weights, bit for bit; another seed gives other weights.

Procedure: three short runs of ``steps`` optimizer steps from fresh models.
  run 1:      the first ``steps`` of the stage's shared training run (checks/_shared/_run.py:
              seed s, its batches), read by an observer: no passes of its own;
  run 2:      a fresh model with seed s trained on the same batch stream, alone;
  other seed: seed s + 1, batches from the stream s + offset + 1.
Runs 1 and 2 must match bitwise (run 1 has other checks' observers working between its
steps, held-out forwards and a blanked model training beside it, and run 2 has none: a match
also shows that nothing those observers do reaches the trajectory). When they do not match,
both are rerun alone under ``torch.use_deterministic_algorithms(True)``: if that makes them
match, the device's kernels were the cause (a warn: training must set it too); if an op
refuses (it has no deterministic kernel, named in the message), the first pair is held to a
documented tolerance instead; if they still differ, something draws from an unseeded source
(a fail).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._fingerprint import fingerprint
from trackcheck.checks._shared._pretrained import weights
from trackcheck.checks._shared._run import Observer, observed, observes
from trackcheck.checks._shared._run import Run as SharedRun
from trackcheck.checks._shared._run import batches as shared_batches
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import Batch
from trackcheck.registry import register
from trackcheck.training import train_steps

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class DeterminismParams:
    steps: int = 5  # optimizer steps per run; unseeded randomness shows from the first step
    # the other seed's run draws its batches from stream seed_offset + 1 (runs 1 and 2 from
    # the shared run's stream, _run.batches)
    seed_offset: int = _streams.DETERMINISM
    # Only used when an op has no deterministic kernel (use_deterministic_algorithms raises
    # for it): the two same-seed runs may then differ by reordered float sums. These are
    # torch.testing's float32 defaults (rtol 1.3e-6 ~ 10 ulp, atol 1e-5), applied to the
    # losses and the final weights; larger differences are not rounding and fail.
    rtol: float = 1.3e-6
    atol: float = 1e-5


@dataclass
class Run:
    """What one short training run saw and produced."""

    batches: list[str] = field(default_factory=list)  # fingerprint per step's (x, y)
    losses: list[float] = field(default_factory=list)
    init: dict[str, Tensor] = field(default_factory=dict)  # state_dict before training (CPU)
    final: dict[str, Tensor] = field(default_factory=dict)  # state_dict after (CPU)


def _state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _train(ctx: Context, seed: int, batches: Iterator[Batch], steps: int) -> Run:
    """A fresh model with ``seed`` trained ``steps`` steps on ``batches``, recorded."""
    run = Run()
    model = ctx.new_model(seed=seed)
    run.init = _state(model)

    def recorded() -> Iterator[Any]:
        for batch in batches:
            run.batches.append(fingerprint((batch.x, batch.y)))
            yield batch

    run.losses = train_steps(ctx, model, recorded(), steps)
    run.final = _state(model)
    return run


def _again(ctx: Context, p: DeterminismParams) -> Run:
    """Run 2: what run 1 did, from a fresh model, alone."""
    return _train(ctx, ctx.seed, shared_batches(ctx), p.steps)


class _First(Observer):
    """Run 1: the shared run's first ``steps`` steps, recorded as :func:`_train` records."""

    def __init__(self, p: DeterminismParams) -> None:
        super().__init__()
        self.budget, self.run = p.steps, Run()

    def start(self, run: SharedRun) -> None:
        self.run.init = _state(run.model)

    def observe(self, run: SharedRun, step: int, loss: float) -> bool:
        assert run.batch is not None
        self.run.batches.append(fingerprint((run.batch.x, run.batch.y)))
        self.run.losses.append(loss)
        if step + 1 >= self.budget:
            self.run.final = _state(run.model)
            return True
        return False

    def finish(self, run: SharedRun) -> None:
        if not self.run.final:  # the run ended early (a non-finite loss): where it stopped
            self.run.final = _state(run.model)


@observes("determinism")
def _observer(_ctx: Context, p: DeterminismParams) -> _First:
    return _First(p)


def _first_diff(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Index of the first differing element (-1 if none), NaN equal to NaN."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y and not (isinstance(x, float) and math.isnan(x) and math.isnan(y)):
            return i
    return -1 if len(a) == len(b) else min(len(a), len(b))


def _differing(a: dict[str, Tensor], b: dict[str, Tensor]) -> list[str]:
    """Names of state tensors that are not bitwise equal."""
    return [k for k in a if fingerprint(a[k]) != fingerprint(b[k])]


def _max_diff(a: dict[str, Tensor], b: dict[str, Tensor], names: list[str]) -> tuple[str, float]:
    diffs = {k: float((a[k].double() - b[k].double()).abs().max()) for k in names}
    worst = max(diffs, key=lambda k: diffs[k])
    return worst, diffs[worst]


def _mismatch(r1: Run, r2: Run) -> str:
    """'' when the two runs are bit-identical; else where they first part, and the likely cause."""
    init = _differing(r1.init, r2.init)
    if init:
        return (
            f"two models built with the same seed start from different weights ({len(init)} "
            f"tensors, e.g. {init[0]}): the model's __init__ draws from an unseeded source "
            "(np.random.default_rng() without a seed, a time-based seed, a separate RNG)"
        )
    step = _first_diff(r1.batches, r2.batches)
    if step >= 0:
        return (
            f"the batches differ from step {step} on (same seed, same generator): the data "
            "path draws from an unseeded source (random noise or augmentation in __getitem__, "
            "a collate_fn, or a train_loader_fn that ignores the generator it is given)"
        )
    step = _first_diff(r1.losses, r2.losses)
    if step >= 0:
        return (
            f"same init and same batches, but the losses differ from step {step} on "
            f"({r1.losses[step]!r} vs {r2.losses[step]!r}): forward or backward draws from an "
            "unseeded source (np.random / time-based noise, a dropout with its own RNG) or a "
            "kernel is nondeterministic"
        )
    final = _differing(r1.final, r2.final)
    if final:
        name, d = _max_diff(r1.final, r2.final, final)
        return (
            f"same losses, but {len(final)} weight tensors differ after {len(r1.losses)} steps "
            f"(largest |diff| {d:.3g} in {name}): the backward pass or the optimizer step is "
            "nondeterministic"
        )
    return ""


def _within_tolerance(r1: Run, r2: Run, p: DeterminismParams) -> tuple[bool, float]:
    """(runs agree within rtol/atol?, largest absolute difference in losses and weights)."""
    pairs = [(torch.tensor(r1.losses), torch.tensor(r2.losses))]
    pairs += [(r1.final[k], r2.final[k]) for k in r1.final if r1.final[k].is_floating_point()]
    worst, ok = 0.0, True
    for a, b in pairs:
        if a.shape != b.shape:
            return False, math.inf
        if a.numel():
            worst = max(worst, float((a.double() - b.double()).abs().max()))
            ok &= bool(torch.isclose(a, b, rtol=p.rtol, atol=p.atol, equal_nan=True).all())
    return ok, worst


def _deterministic_pair(ctx: Context, p: DeterminismParams) -> tuple[tuple[Run, Run] | None, str]:
    """Runs 1 and 2 again under use_deterministic_algorithms(True); (None, op) if an op refuses."""
    was_on = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = (_again(ctx, p), _again(ctx, p))
    except RuntimeError as e:
        if "deterministic" not in str(e):
            raise
        # torch's message starts with the op's name: "index_add_cuda_ does not have a
        # deterministic implementation, but you set 'torch.use_deterministic_algorithms(True)'"
        if "CUBLAS_WORKSPACE_CONFIG" in str(e):
            return None, (
                "cuBLAS matmul (deterministic only with CUBLAS_WORKSPACE_CONFIG=:4096:8 set "
                "before the process starts)"
            )
        first = str(e).strip().splitlines()[0]
        m = re.match(r"\s*(\S+) does not have a deterministic implementation", first)
        return None, m.group(1) if m else first[:200]
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=warn_only)
    return runs, ""


def _figure(l1: list[float], l2: list[float], l3: list[float]) -> Figure:
    """The three runs' loss curves [steps] on one axis."""
    fig, ax = plots.figure()
    ax.plot(l1, lw=3, alpha=0.5, label="run 1 (seed s)")
    ax.plot(l2, ls="--", marker="o", ms=3, label="run 2 (seed s)")
    ax.plot(l3, ls=":", label="seed s+1")
    ax.set(title="same seed twice: the curves must coincide", xlabel="step", ylabel="loss")
    plots.set_y_scale(ax, l1, l2, l3)  # log where a spike would flatten the rest
    ax.legend(fontsize=8)
    return fig


def _other_seed_notes(r1: Run, r3: Run, loaded: bool = False) -> list[str]:
    """Warnings when a different seed changes nothing: the seed does not reach the model.
    ``loaded``: the factory loads trained weights (checks/_shared/_pretrained.py), which are the
    same under any seed by design."""
    notes = []
    if not loaded and not _differing(r1.init, r3.init):
        notes.append(
            "seeds s and s+1 give the same initial weights: the model factory ignores the seed "
            "(a model instance passed to trackcheck.run is deep-copied, so every check sees "
            "one init) or the init is not random; pass a factory (a class or a lambda, or "
            "Hydra _partial_: true) so the seed fixes the init"
        )
    if not _differing(r1.final, r3.final):
        notes.append(
            "a different seed and batch stream end at the same weights: the seed reaches "
            "neither the model nor the data"
        )
    return notes


def _same_seed_verdict(
    ctx: Context, p: DeterminismParams, r1: Run, r2: Run
) -> tuple[Status, str, bool]:
    """(status, message, whether use_deterministic_algorithms was needed) for runs 1 and 2."""
    head = f"two runs with seed {ctx.seed} on {ctx.device.type}"
    first = _mismatch(r1, r2)
    if not first:
        mode = "with" if torch.are_deterministic_algorithms_enabled() else "without"
        return (
            Status.PASS,
            (
                f"{head} are bit-identical over {len(r1.losses)} steps (batches, losses, "
                f"{len(r1.final)} state tensors), {mode} torch.use_deterministic_algorithms"
            ),
            False,
        )
    rerun, refused_op = _deterministic_pair(ctx, p)
    if rerun is not None:
        again = _mismatch(*rerun)
        if not again:
            return (
                Status.WARN,
                (
                    f"{head} differ by default ({first}), and are bit-identical under "
                    "torch.use_deterministic_algorithms(True): set it in training (on CUDA also "
                    "CUBLAS_WORKSPACE_CONFIG=:4096:8) to reproduce runs"
                ),
                True,
            )
        return (
            Status.FAIL,
            (
                f"{head} are not identical: {again}; they still differ under "
                "torch.use_deterministic_algorithms(True)"
            ),
            False,
        )
    close, worst = _within_tolerance(r1, r2, p)
    tol = f"rtol={p.rtol:g}, atol={p.atol:g}"
    if close:
        return (
            Status.WARN,
            (
                f"{head} differ ({first}); torch.use_deterministic_algorithms(True) refuses "
                f"{refused_op} (no deterministic kernel), so they were held to {tol}: largest "
                f"difference {worst:.3g}, within tolerance"
            ),
            False,
        )
    return (
        Status.FAIL,
        (
            f"{head} are not identical: {first}; {refused_op} has no deterministic kernel, and "
            f"the runs differ by {worst:.3g}, beyond {tol}"
        ),
        False,
    )


@register("determinism", DeterminismParams, fast=True)
def determinism(ctx: Context, p: DeterminismParams) -> CheckResult:
    """Same seed twice gives identical batches, losses and weights; another seed differs."""
    first = observed(ctx, "determinism", p)  # run 1: the stage's shared run
    assert isinstance(first, _First)
    r1 = first.run
    r2 = _again(ctx, p)
    r3 = _train(ctx, ctx.seed + 1, ctx.train_batches(seed_offset=p.seed_offset + 1), p.steps)
    status, msg, needed_det = _same_seed_verdict(ctx, p, r1, r2)
    _, worst = _within_tolerance(r1, r2, p)
    diff_other = _differing(r1.final, r3.final)
    metrics = {
        "bitwise_equal": float(not _mismatch(r1, r2)),
        "first_diff_batch": float(_first_diff(r1.batches, r2.batches)),  # -1: none
        "first_diff_loss_step": float(_first_diff(r1.losses, r2.losses)),  # -1: none
        "max_abs_diff": worst,
        "needed_deterministic_algorithms": float(needed_det),
        "other_seed_tensors_differing": float(len(diff_other)),
    }
    series = {
        "loss_run1": list(enumerate(r1.losses)),
        "loss_run2": list(enumerate(r2.losses)),
        "loss_other_seed": list(enumerate(r3.losses)),
    }
    notes = _other_seed_notes(r1, r3, weights(ctx).pretrained)
    if notes:
        status = Status.WARN if status == Status.PASS else status
        msg += "; " + "; ".join(notes)
    elif status != Status.FAIL:
        msg += f"; seed {ctx.seed + 1} gives other weights ({len(diff_other)} tensors differ)"
    return CheckResult(
        "determinism",
        status,
        msg,
        metrics=metrics,
        series=series,
        figures={"losses": plots.deferred(_figure, r1.losses, r2.losses, r3.losses)},
        value=worst,
        threshold="bitwise (or within rtol/atol where an op has no deterministic kernel)",
    )
