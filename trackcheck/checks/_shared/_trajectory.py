"""One judgement of a short training run, shared by every check that trains, so that they
cannot disagree about the same run: did its loss go non-finite, its outputs explode, its loss
end above where it started or spike far above it, sit on a plateau, or decrease?

A check records its verdict in its metrics (``trajectory``, an index into ``VERDICTS``, and
the numbers behind it); lr_range reads the finished checks' verdicts to decide whether the
learning rate needs its range test (``diverging``), and the message of each check says what
its own run did. Shapes: ``losses`` is the per-step training loss, ``out`` the model's last
prediction tensor ([B, C] logits, [B, T, V], [B] / [B, 1] for binary and regression).

A spike or an oversized step is a divergence only when the loss does not come back from
it. A run whose loss spiked (or whose early steps were larger than its weights) and then
ended far below where it started "recovered": the learning rate sits above the edge of
stability for the first steps, yet the run trains (the PyTorch tutorial's logistic
regression at SGD 0.5: 2.3 -> 16 in the first 10 steps, then 0.15 by step 60; LBFGS
without a line search, whose step can land on a loss of 100 and the next back at 0.002).
That is not a diverged run: no check fails on it, and lr_range runs to say where the
usable range ends (a warning, unless a run diverged).
"""

from __future__ import annotations

import math
import random
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from trackcheck.checks._shared._common import init_outputs
from trackcheck.checks._shared._floor import constant_output, mean_loss
from trackcheck.context import Context
from trackcheck.core import CheckResult

# worst last: the verdict of a run is the worst that applies
VERDICTS = (
    "decreased",
    "plateaued",
    "recovered",
    "rose",
    "spiked",
    "overstepped",
    "exploded",
    "nonfinite",
)
# the verdicts that say the run diverged (what lr_range is run for, and fails on)
DIVERGING = ("rose", "spiked", "overstepped", "exploded", "nonfinite")
# a run that spiked or overstepped and came back: lr_range runs for it, and warns at most
UNSTABLE = ("recovered",)


@dataclass(frozen=True)
class TrajectoryParams:
    # "spiked": the highest loss exceeds this many times the run's scale, the larger of its
    # first loss and the loss of a constant predictor with the prior in the bias (so a run
    # that starts near 0, a checkpoint, is not judged against its own tiny start). 4x is
    # where fastai's and Smith's range tests call a loss diverged. Measured on correct
    # models (scripts/trajectory_margins.py: MLP on breast_cancer, digits, diabetes, the
    # ResNet on digits, the GPT on text, at Adam 3e-3 and 1e-2 and SGD 0.1 with momentum,
    # seeds 0-2): the highest ratio over loss_decreases', overfit_batch's and output_range's
    # runs was 1.15, so 4x leaves a margin of 3.5x.
    spike_factor: float = 4.0
    # "rose": the median of the last quarter of the run lies above every loss of its first
    # quarter. Distribution-free: for a flat loss with exchangeable noise, q steps a quarter
    # and k = ceil(q / 2), its chance is C(q, k) / C(2q, k): 1.1e-3 for q = 15
    # (loss_decreases' 60 steps). Judged only from this many steps a quarter on (below it the
    # chance passes 0.05: q = 4 gives 0.07), and only for a rise of at least plateau_drop x
    # the scale: a model trained on blanked inputs sits at the prior's loss, where its bias
    # chasing each batch's label mix lifts the loss by 0.3% (2.302 -> 2.309 on digits at
    # SGD 0.5), a rise nobody would call a divergence
    min_quarter: int = 5
    # "exploded": an output entry beyond this magnitude. Logits (and log-probabilities):
    # float32's exp overflows at 88.7 and every softmax or sigmoid is exactly 0 or 1 from a
    # margin of about 17 on, so no loss over them can reward a logit of 1e3 over one of
    # 100: only a step that blew the weights up puts one there. Measured on the same correct
    # runs: at most 91 (output_range, MLP at Adam 1e-2 on breast_cancer): 11x below.
    logit_bound: float = 1e3
    # Regression: |prediction| beyond |targets' mean| + this many times the largest target's
    # distance from the mean (diabetes: 152 + 10 x 194, about 2100), or this many times the
    # largest distance the untrained model's outputs had from it, whichever is larger: what
    # the model output before any step is no explosion (unnormalised inputs, the PyTorch
    # tutorial's polynomial features x, x^2, x^3 up to 31, give a Linear(3, 1) outputs of
    # |10-20| at init against sin targets within 1). Measured on the same correct runs: at
    # most 406 (loss_decreases, diabetes, Adam 1e-2): 5x below.
    regression_bound: float = 10.0
    # the untrained outputs that bound is measured on: the training examples loss_at_init
    # and init_bias judge (the stage computes them once)
    init_examples: int = 1024
    # "overstepped": one optimizer step moved the weights (all trainable tensors as one
    # vector) by more than this share of their norm: a step as large as the weights replaces
    # them, so nothing learnt persists (Karpathy's rule of thumb for a healthy update is
    # about 1e-3 of the weights). Measured over the first 8 steps on 4 examples, seeds 0-4
    # (MLP, CNN+BatchNorm, GRU, small GPT, ResNet, regression MLP): at Adam 3e-3 and 1e-2 and
    # SGD 0.1 with momentum at most 0.30 (one exception: the regression MLP at SGD 0.1 with
    # momentum, 21.6 at a seed whose loss itself blows up to 1e8: a true catch); Adam 1
    # 4.3-10.5, SGD 10 1.8 and up: the limit sits 3.3x above the correct runs and 1.8x below
    # the mildest far-too-high one. A correct linear model can overstep too: the PyTorch
    # tutorial's logistic regression at SGD 0.5 moves its default-init weights (norm 1.8)
    # by 1.4-2.4x their norm in its second step, as its loss spikes and recovers; the
    # recovery (recovered_share) tells it from a divergence, not the step size.
    max_update: float = 1.0
    # how many first steps the update is measured on (momentum builds up over about
    # 1 / (1 - 0.9) = 10 steps; Adam's first step is its largest)
    update_steps: int = 10
    # "plateaued": the median of the last quarter is less than this share below the first
    # quarter's median
    plateau_drop: float = 0.01
    # "recovered" (not diverging): a run that spiked or overstepped whose last quarter's
    # median loss ended at most this share of its scale: it learnt past the spike, most of
    # the way from where it started. Measured: the logistic regression above ends at
    # 0.13-0.38 of its scale over input_independent's 30 steps and loss_decreases' 60 (3
    # seeds), its 4- and 16-example fits at 1e-5 to 3e-3; a far too high lr that spiked
    # does not come back below its start (an MLP at Adam 1 and AdamW 1: 0.85 on
    # output_range's 16-example fit; Adam 30: 3.5; SGD 10: 1.5; a classifier that
    # collapses to the prior ends at 1.0), and the ResNet at lr 1e3 ends near its start.
    # 0.5 sits between the two. Outputs that exploded and non-finite losses never recover.
    recovered_share: float = 0.5
    # ...and a run that overstepped recovers only when its largest step stayed at most this
    # many times the weights' norm: a lr far too high can still fit 4 examples (BatchNorm
    # bounds the outputs), so the step is the evidence there. Measured over the first 10
    # steps: the logistic regression above 1.38-2.41 (3 seeds, loss_decreases' and
    # overfit_batch's runs); Adam and AdamW at lr 1, whose first step moves every weight
    # by about 1, 4.74 (MLP), 5.5 (CNN with BatchNorm), 6.85 (GRU). 3 sits 1.25x above the
    # first and 1.6x below the second.
    recoverable_update: float = 3.0


DEFAULT = TrajectoryParams()


@dataclass
class Trajectory:
    verdict: str  # one of VERDICTS
    first: float  # the first loss
    last: float  # the last loss
    peak: float  # the highest finite loss
    scale: float  # what a spike is measured against: max(first loss, the prior's loss)
    max_output: float  # the largest |output| seen (nan: not measured)
    output_bound: float  # its bound (nan: not measured)
    why: str  # one clause for the message: what the run did
    max_update: float = math.nan  # the largest step / weight norm (nan: not measured)

    @property
    def diverging(self) -> bool:
        return self.verdict in DIVERGING

    @property
    def unstable(self) -> bool:
        """Spiked or overstepped, then recovered: not diverging, worth lr_range's look."""
        return self.verdict in UNSTABLE

    def metrics(self) -> dict[str, float]:
        return {
            "trajectory": float(VERDICTS.index(self.verdict)),
            "spike_ratio": self.peak / self.scale if self.scale > 0 else math.nan,
            "max_abs_output": self.max_output,
            "max_update_ratio": self.max_update,
        }


def output_bound(
    classification: bool,
    y: Tensor | None,
    p: TrajectoryParams = DEFAULT,
    at_init: Tensor | None = None,
) -> float:
    """The largest |output| a trained model has any use for (``TrajectoryParams``):
    regression from the targets ``y`` and the untrained model's outputs ``at_init``."""
    if classification or y is None or y.numel() == 0:
        return p.logit_bound
    y = y.double()
    center = float(y.mean())
    reach = float((y - center).abs().max())
    if at_init is not None and at_init.numel() and bool(torch.isfinite(at_init).all()):
        reach = max(reach, float((at_init.double() - center).abs().max()))
    return abs(center) + p.regression_bound * max(reach, 1e-12)


def _outputs_at_init(ctx: Context, p: TrajectoryParams) -> Tensor | None:
    """The untrained model's outputs on the stage's init examples (``init_outputs``: cached
    once loss_at_init or init_bias ran), the random state left as it was: a check calls
    this mid-run, and its own draws must not change. None when they cannot be computed."""
    state = (random.getstate(), np.random.get_state())
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            return init_outputs(ctx, p.init_examples)[0]
    except Exception:  # noqa: BLE001 - a bound from the targets alone then
        return None
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])


def judge(
    losses: list[float],
    *,
    prior_loss: float = math.nan,
    max_output: float = math.nan,
    bound: float = math.nan,
    max_update: float = math.nan,
    p: TrajectoryParams = DEFAULT,
) -> Trajectory:
    """The verdict on one run's per-step ``losses`` (and the largest |output| it produced,
    against ``bound``, and its largest step relative to the weights, when measured)."""
    v = np.asarray(losses, dtype=np.float64)
    finite = v[np.isfinite(v)]
    first = float(v[0]) if len(v) else math.nan
    last = float(v[-1]) if len(v) else math.nan
    peak = float(finite.max()) if len(finite) else math.nan
    scale = max(abs(first), prior_loss) if math.isfinite(prior_loss) else abs(first)
    t = Trajectory("decreased", first, last, peak, scale, max_output, bound, "", max_update)
    if len(v) and not np.isfinite(v).all():
        at = int(np.argmax(~np.isfinite(v)))
        t.verdict, t.why = "nonfinite", f"the loss turned {v[at]} at step {at}"
        return t
    if not math.isfinite(max_output) and not math.isnan(max_output):
        t.verdict, t.why = "nonfinite", "the outputs turned non-finite"
        return t
    if math.isfinite(bound) and max_output > bound:
        t.verdict = "exploded"
        t.why = f"the outputs reached |{max_output:.3g}|, beyond any use ({bound:.3g})"
        return t
    if max_update > p.max_update:
        t.verdict = "overstepped"
        t.why = (
            f"one step moved the weights by {max_update:.3g}x their norm (limit "
            f"{p.max_update:g}x: such a step replaces them)"
        )
        return _recovery(t, v, p) if max_update <= p.recoverable_update else t
    if len(v) and scale > 0 and peak > p.spike_factor * scale:
        at = int(np.argmax(v))
        t.verdict = "spiked"
        t.why = (
            f"the loss spiked to {peak:.4g} at step {at}, {peak / scale:.3g}x its scale "
            f"{scale:.4g} (limit {p.spike_factor:g}x)"
        )
        return _recovery(t, v, p)
    q = len(v) // 4
    if q >= p.min_quarter:
        head, tail = v[:q], float(np.median(v[-q:]))
        if tail > float(head.max()) + p.plateau_drop * scale:
            t.verdict = "rose"
            t.why = (
                f"the loss ended above its start (median of the last {q} steps {tail:.4g} > "
                f"every one of the first {q}, at most {float(head.max()):.4g})"
            )
            return t
        if tail > float(np.median(head)) * (1 - p.plateau_drop):
            t.verdict, t.why = "plateaued", f"the loss stayed at {tail:.4g}"
    return t


def _recovery(t: Trajectory, v: np.ndarray, p: TrajectoryParams) -> Trajectory:
    """``t`` (spiked or overstepped) as "recovered" when the loss ended far below its scale
    (``TrajectoryParams.recovered_share``): the median of its last quarter."""
    if not len(v) or not t.scale > 0:
        return t
    tail = float(np.median(v[-max(len(v) // 4, 1) :]))
    if tail <= p.recovered_share * t.scale:
        t.verdict = "recovered"
        t.why = (
            f"{t.why}, then recovered: the loss ended at {tail:.4g}, {tail / t.scale:.2g}x "
            f"its scale (a divergence ends above {p.recovered_share:g}x)"
        )
    return t


def max_abs(out: Tensor) -> float:
    """The largest |entry| of an output tensor (inf when it holds a NaN or Inf)."""
    o = out.detach().float()
    if not bool(torch.isfinite(o).all()):
        return math.inf
    return float(o.abs().max()) if o.numel() else 0.0


def recorded(result: CheckResult) -> str | None:
    """The verdict a finished check recorded (None: it judged no run)."""
    code = result.metrics.get("trajectory")
    if code is None or not math.isfinite(code):
        return None
    return VERDICTS[int(code)]


class UpdateMeter:
    """The largest optimizer step relative to the weights over a run's first steps: call it
    after each step (``on_step``). Holds one copy of the trainable weights meanwhile."""

    def __init__(self, model: nn.Module, p: TrajectoryParams = DEFAULT) -> None:
        self.model = weakref.ref(model)  # not kept alive: one model in memory at a time
        self.params = [q for q in model.parameters() if q.requires_grad]
        self.prev: list[Tensor] | None = [q.detach().clone() for q in self.params]
        self.left = p.update_steps
        self.max = 0.0 if self.params else math.nan

    def __call__(self, *_: object) -> bool:
        if self.prev is None:
            return False
        with torch.no_grad():
            moved = sum(
                float((q.detach() - w).float().pow(2).sum())
                for q, w in zip(self.params, self.prev, strict=True)
            )
            norm = sum(float(w.float().pow(2).sum()) for w in self.prev)
        ratio = math.sqrt(moved / norm) if norm > 0 else 0.0
        self.max = max(self.max, ratio) if math.isfinite(ratio) else math.inf
        self.left -= 1
        self.prev = [q.detach().clone() for q in self.params] if self.left > 0 else None
        return False


def of_run(
    ctx: Context,
    losses: list[float],
    out: Tensor | None = None,
    y: Tensor | None = None,
    update: UpdateMeter | None = None,
    p: TrajectoryParams = DEFAULT,
) -> Trajectory:
    """:func:`judge` for a check's run on ``ctx``: the spike measured against the prior's
    loss on targets ``y`` (a constant output shaped like ``out``), the explosion on ``out``
    (the model's output after the run) against the task's bound."""
    step = update.max if update is not None else math.nan
    model = update.model() if update is not None else None
    if model is not None and isinstance(ctx.optimizer(model), torch.optim.LBFGS):
        # a quasi-Newton step goes to the minimum of a curvature model, not lr x gradient:
        # its size says nothing about the lr (pytorch/examples' time_sequence_prediction,
        # LBFGS at lr 0.8, takes a first step larger than its small initial weights)
        step = math.nan
    if out is None or y is None:
        return judge(losses, max_update=step, p=p)
    o = ctx.pipeline.like(out.detach().float().to(ctx.device), out)  # loss_takes: whole
    prior = math.nan
    try:
        prior = mean_loss(ctx, constant_output(ctx, o, ctx.prior), y.to(ctx.device))[0]
    except (RuntimeError, ValueError):  # a loss that cannot take a constant output
        pass
    y_all, at_init = None, None
    if not ctx.task.classification:
        y_all, at_init = ctx.targets("train").float(), _outputs_at_init(ctx, p)
    bound = output_bound(ctx.task.classification, y_all, p, at_init)
    return judge(losses, prior_loss=prior, max_output=max_abs(o), bound=bound, max_update=step, p=p)
