"""input-independent baseline: a model trained on real inputs beats one trained on blanked
inputs on HELD-OUT data, by a paired one-sided test on per-example losses.

Two models start from the same seeded init and see the same batches in the same order; the
only difference is that the baseline's inputs are blanked (zeros; a constant token id for
token inputs; for a model with BatchNorm or InstanceNorm, Gaussian noise with the inputs'
mean and std per element, since a constant input has no variance for those layers to
normalise and its training diverges). Both are then judged on held-out data, the baseline
on blanked inputs too. The closest prior art compares them on the training batch, where a
model wins by memorising even random labels; held-out data asks the real question: does the
model extract information from its input that generalises?

Held-out means two sets, and both must show the gain:

- the test split (``ctx.data.test_loader()``): catches a model that learns something that
  does not carry over to the test data (train and test preprocessed differently);
- a slice of the training split that neither model trains on. Why the test split alone is not
  enough: with the train labels shuffled (the planted bug), the real-input model learns a
  random function of its inputs; when the inputs have strong structure that the TEST labels
  follow (the size features of breast_cancer, the digit clusters), such a function beats the
  blanked baseline on the test split by luck, coherently over whole clusters of examples,
  so a per-example test calls it significant. Measured over 12 label permutations each,
  test split alone at alpha 0.01: false pass in 25-42% of runs on breast_cancer and digits,
  8% on diabetes, at 30 to 120 steps. The training slice carries the same (shuffled)
  labels as the training data, independent of the inputs under this bug, so the per-example
  gains there have mean <= 0 and the test is valid: no luck to be had.

PASS needs the paired test significant on every held-out set at one look. A set that is not,
after the last look, has too few examples for the gain, or shows none: the check FAILs only
when its data rule the gain out, and WARNs "undecided", with the numbers, when they cannot
(a check never fails for lack of statistical power). The gain it should show:

- another set is significant: that set's mean gain. For a correct model both held-out sets
  come from the training distribution, so their mean gains are equal; a one-sided Welch test
  of "this set's mean gain is below the decisive set's" at ``alpha`` FAILs a correct model
  with probability <= alpha. With the train labels shuffled and a lucky test split, the
  training slice's gain sits at or below 0: caught;
- no set is significant: ``min_effect`` standard deviations of the per-example gain, tested
  on the sets' pooled gains (noncentral t at ``alpha``): a correct model whose held-out gain
  is at least that large FAILs with probability <= alpha.

Each of these is one test, made once after the last look, so it has ``alpha`` to itself. The
message also gives the power the paired test had, at the look's level, for that gain. Why
not "FAIL when the set had power >= 0.8" (the textbook rule): a correct model whose gain is
exactly the one in question is then not significant with probability 1 - power, up to 20%
of runs: a false alarm rate far above alpha.

BatchNorm models are judged after their running statistics are recomputed on training
batches (checks/_shared/_bn.py): a slow momentum leaves them far from the trained network's
after 30 steps, and eval mode then computes another network than the one trained.

The real-input model is the stage's shared training run (checks/_shared/_run.py), which
never trains on the training slice whichever checks are selected; the blanked model trains
beside it on the same batches. This module trains the blanked model and judges the two; the
blanked inputs, the held-out sets and the run's batches are in _heldout.py, the tests
themselves (paired t-test, interval, power, the Welch and noncentral-t tests of an undecided
set) in _stats.py (both beside this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._bn import CALIBRATION_BATCHES, recalibrate
from trackcheck.checks._shared._park import HOST, move, on_device
from trackcheck.checks._shared._run import Observer, Run, looks, observed, observes
from trackcheck.checks._shared._trajectory import DEFAULT as TRAJECTORY
from trackcheck.checks._shared._trajectory import judge as judge_run
from trackcheck.checks.input_independent._heldout import (
    Noise,
    Plan,
    blank,
    heldout_losses,
    normalises_over_inputs,
    plan,
    start_losses,
)
from trackcheck.checks.input_independent._stats import (
    below_effect_test,
    below_other_test,
    mean_ci,
    paired_test,
    power,
)
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import primary
from trackcheck.registry import register
from trackcheck.training import train_steps

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class InputIndependentParams:
    # Training steps between two looks at the held-out data, and the most steps in all.
    # Measured at the first look (30 steps, Adam 3e-3, one-sided paired t-test, worst of 10
    # seeds for the MLPs): mlp/diabetes p <= 2e-5 (test split) and 8.9e-5 (training slice),
    # mlp/breast_cancer <= 7e-19 and 3e-10, resnet/digits 5e-119 and 9e-93, gpt/text 2e-72
    # and 1e-249: all pass at the first look, the weakest 37x below its level. Diabetes gets
    # LESS significant with longer training (test split p ~1e-3 after 60 steps: a bolder model
    # wins big on some examples and loses a little on many), so the first look comes early;
    # the later looks give slow learners (SGD, a small lr) more budget. With the train labels
    # shuffled (20 permutations each, MLP on breast_cancer, digits, diabetes) none passed; the
    # smallest training-slice p was 0.13.
    look_every: int = 30
    max_steps: int = 90
    # One-sided level of each paired test. The looks share it (Bonferroni: alpha / number of
    # looks each), so a model that extracts nothing from its input passes with probability
    # <= alpha however many looks there are.
    alpha: float = 0.01
    # Fraction of the training split held out from both models and judged like the test
    # split (the module docstring says why); 0 judges the test split only.
    train_holdout: float = 0.2
    # held-out examples each look evaluates per set (the first ones, in order)
    max_eval: int = 1024
    # what blanked token inputs become: ids have no "zero input" (id 0 is a real token,
    # "\n" in the shipped text vocabulary), so the baseline sees this one token everywhere
    # and, through the positions, can still learn a position-dependent unigram
    token_id: int = 0
    # BatchNorm models: the running statistics are recomputed on the last this-many training
    # batches of each look (the blanked model on their blanked version) before the eval-mode
    # judgment; 30 steps at a slow momentum (0.01, torchvision's MobileNetV3) leave them far
    # from the trained network's (checks/_shared/_bn.py says why and how many)
    bn_batches: int = CALIBRATION_BATCHES
    # A model that normalises over the batch or the positions (BatchNorm, InstanceNorm)
    # cannot train on a constant input: every such layer sees zero variance and divides
    # rounding error by sqrt(eps), and the baseline diverges (a d2l ResNet-18 at SGD 0.05:
    # NaN at step 4), which says nothing about the real model. True: its baseline gets
    # Gaussian noise with each input element's mean and std over the first look's training
    # examples instead of zeros (independent of the labels, so it can learn the prior only);
    # float inputs only (token ids stay one constant token). False: zeros for every model.
    noise_for_normalised: bool = True
    # The smallest gain, in per-example standard deviations (mean gain / sd of the gains),
    # that counts as information when NO held-out set is significant: the check FAILs only
    # if the pooled held-out gains rule out this much (noncentral t, p < alpha), else it
    # WARNs, undecided (module docstring). Measured at the first look, 8 seeds each, the
    # clean shipped configs show 0.46-0.81 (mlp/diabetes, the weakest), 0.99-2.1
    # (mlp/breast_cancer), 1.4-2.5 (resnet and mlp on digits), 2.3-2.9 (gpt/text). With the
    # train labels shuffled, neither set was significant in 95 of 98 runs on the shipped data
    # (32 of 32 on breast_cancer, 31 of 32 on diabetes, 32 of 34 on digits) and there the
    # pooled data ruled out every gain above 0.31 at worst (diabetes; 0.30 on 30 runs on
    # 200-300-example subsets). 0.38 ~ sqrt(0.31 x 0.46), 1.2x from each side.
    min_effect: float = 0.38
    # A run too short to teach either model anything cannot rule a gain out (a fine-tuning
    # lr on random init: BERT at 2e-5 leaves both held-out losses at ln 2 +- 3e-4). Such a
    # run is undecided, never failed: the real-input model's loss moved by less than this
    # share both on its training batches (first vs last quarter, the shared trajectory's
    # plateau) and on held-out data since init (against the prior's loss), or the blanked
    # model's held-out loss is still this share above the prior's (it has not learnt the
    # label frequencies / target mean, the most a blank can learn). The share is the shared
    # trajectory's plateau (checks/_shared/_trajectory.py: a loss that moved < 1% did not
    # move). With the train labels shuffled (digits, width 32, Adam 3e-3) the real model's
    # training loss falls 1.5-2% in 90 steps as it memorises, its held-out loss rises.
    # A fourth reason, on the training curves (_behind): the real model's held-out loss is
    # still coming down and on the batches both train on it is not below the blanked model
    # (paired per step over the second half, one-sided at alpha). Measured after 90 steps:
    # the tutorial's new head on a frozen trunk (SGD 1e-3, batch 4, seed 1) sits 0.0050
    # ABOVE the blank there (t = -4.1) and its held-out loss moved -0.013 since init, both
    # models at the prior's loss; the shuffled-label bugs are 0.027-0.064 BELOW the blank
    # (t = 8.8 to 10.5, memorising) with held-out gains <= 0: decided, as before.
    min_move: float = TRAJECTORY.plateau_drop
    # ...and it trains on, the looks at twice the steps each time (180, 360), up to this
    # many steps in all, then warns with what it measured. 4x the budget: tut_nn_cnn's Mnist_CNN
    # (SGD 0.1, ReLU'd logits that start slowly) moves 0.3% in 90 steps; its 360-step run
    # decides. The looks past max_steps count in the Bonferroni split of alpha like the others.
    extend_to: int = 360


@dataclass
class Judged:
    """One held-out set's per-example losses for both models, and the paired test."""

    real: np.ndarray
    blanked: np.ndarray
    gain: np.ndarray = field(init=False)
    p_value: float = field(init=False)

    def __post_init__(self) -> None:
        self.gain = self.blanked - self.real
        self.p_value = paired_test(self.gain)

    @property
    def sd(self) -> float:
        return float(self.gain.std(ddof=1)) if len(self.gain) > 1 else 0.0


@dataclass
class Undecided:
    """Held-out data whose paired test is not significant, weighed against the gain they
    should show: the decisive set's, or ``min_effect`` standard deviations when none is."""

    name: str  # a set, or "test split and the training slice together" (pooled)
    key: str  # its metrics' prefix: the set's, or "pooled"
    n: int
    effect: float  # the gain (loss units) they were asked to resolve
    against: str  # where that gain comes from, for the message
    power: float  # of the paired test at the look's level, for that gain
    p_below: float  # p-value of "the gain is below that": small = ruled out = FAIL
    also: str = ""  # against a decisive set: the minimal-effect test it must fail too


def weigh(sets: dict[str, Judged], level: float, p: InputIndependentParams) -> list[Undecided]:
    """The sets that are not significant: did their data rule out the gain (FAIL), or could
    they not resolve it (WARN)? The module docstring gives the two tests and their errors."""
    open_ = [k for k, j in sets.items() if j.p_value >= level]
    decisive = sorted((j.p_value, k) for k, j in sets.items() if k not in open_)
    if not open_:
        return []
    if decisive:  # each open set against the most decisive set's gain (Welch)
        best = decisive[0][1]
        effect = float(sets[best].gain.mean())
        weighed = []
        for k in open_:
            j = sets[k]
            d = effect / j.sd if j.sd > 0 else math.inf
            pb, also = _below_both(j.gain, sets[best].gain, best, p)
            pw = power(len(j.gain), d, level) if math.isfinite(d) else 1.0
            against = f"the {best}'s"
            weighed.append(
                Undecided(k, k.replace(" ", "_"), len(j.gain), effect, against, pw, pb, also)
            )
        return weighed
    gain = np.concatenate([sets[k].gain for k in open_])  # none decisive: pooled
    sd = float(gain.std(ddof=1)) if len(gain) > 1 else 0.0
    pb = below_effect_test(gain, p.min_effect)
    against = f"{p.min_effect:g} standard deviations of the per-example gain, the minimal effect"
    pooled = len(open_) > 1
    name = " and the ".join(open_) + (" together" if pooled else "")
    key = "pooled" if pooled else open_[0].replace(" ", "_")
    pw = power(len(gain), p.min_effect, level)
    return [Undecided(name, key, len(gain), p.min_effect * sd, against, pw, pb)]


def _below_both(
    gain: np.ndarray, decisive: np.ndarray, best: str, p: InputIndependentParams
) -> tuple[float, str]:
    """p-value that a set's gain is below the decisive set's AND below ``min_effect`` (the
    larger of the two one-sided p-values: an intersection-union test, level alpha), and the
    clause saying the second. The Welch test alone presumes the two sets' gains are equal,
    which holds for the training slice (drawn from the training split) but not for a test
    split from another stretch or period of the data: PyTorch's word-language-model example
    (its test text a later stretch of the corpus, 34 sequences) gains 0.05 there against
    0.33 on the training slice after 360 steps (Welch p = 4e-5) while its own data cannot
    rule out the minimal effect (p = 0.12). A smaller gain is not "no information"; a set
    that carries none (shuffled labels, a lucky test split: the training slice at gain
    -0.004 +- 0.21 on 287 examples) is below both."""
    pb_other = below_other_test(gain, decisive)
    pb_effect = below_effect_test(gain, p.min_effect)
    minimal = f"{p.min_effect:g} standard deviations of the per-example gain, the minimal effect"
    if pb_effect < p.alpha:
        said = f"and below {minimal} (p={pb_effect:.2g})" if pb_other < p.alpha else ""
        return max(pb_other, pb_effect), said
    if pb_other < p.alpha:
        return pb_effect, (
            f"its gain is below the {best}'s (p={pb_other:.2g}) but not below {minimal} "
            f"(p={pb_effect:.2g}): the two sets may differ in distribution (a test split from "
            "another stretch or period of the data) or in preprocessing"
        )
    return max(pb_other, pb_effect), ""


class _Arms(Observer):
    """Both models on the shared training run (checks/_shared/_run.py): the real-input model
    IS the run's model; the blanked model starts from the same seeded init and, after each
    piece of at most ``look_every`` steps, trains on the same batches the run took, blanked.
    At each look both are judged on the held-out sets; decided as the check's own loop was."""

    def __init__(self, ctx: Context, p: InputIndependentParams) -> None:
        super().__init__()
        self.p, self.marks = p, _marks(p)
        self.budget, self.level = self.marks[-1], p.alpha / len(self.marks)
        self.pl = plan(ctx, p.train_holdout, p.max_eval)
        self.curves: dict[str, list[float]] = {"real inputs": [], "blanked inputs": []}
        self.sets: dict[str, Judged] = {}
        self.steps, self.done = 0, 0  # steps taken by the run / by the blanked model
        self.noise: Noise | None = None
        self.unlearnt = ""
        self.lr: Any = None
        self.start_: dict[str, np.ndarray] = {}
        self.prior: dict[str, np.ndarray] = {}
        self.base: nn.Module | None = None
        self.opt_base: Any = None
        self.chunk: list[Any] = []  # the run's batches since the blanked model last trained
        self.recent: list[Any] = []  # the last piece's batches, and blanked (the look's)
        self.blanked: list[Any] = []
        self.normalised = False
        self.run_losses: list[float] = []

    def start(self, run: Run) -> None:
        ctx, p = run.ctx, self.p
        both = {k: start_losses(ctx, run.model, f(), p.max_eval) for k, f in self.pl.judged.items()}
        self.start_ = {k: v[0].numpy() for k, v in both.items()}
        self.prior = {k: v[1].numpy() for k, v in both.items()}
        # the same seed: the same init; it trains on the device in its turn and waits in
        # host memory otherwise (checks/_shared/_park.py says why)
        self.base = move(HOST, ctx.new_model())
        self.opt_base = ctx.optimizer(self.base)
        self.normalised = p.noise_for_normalised and normalises_over_inputs(run.model)

    def observe(self, run: Run, step: int, loss: float) -> bool:
        assert run.batch is not None and run.optimizer is not None
        self.lr = run.optimizer.param_groups[0].get("lr")
        self.curves["real inputs"].append(loss)
        self.chunk.append(run.batch)
        self.steps = step + 1
        mark = next(m for m in self.marks if m >= self.steps)
        last = self.steps == mark  # the piece after which the models are looked at
        if not last and self.steps - self.done < self.p.look_every and math.isfinite(loss):
            return False
        self._train_blanked(run.ctx)
        if not math.isfinite(loss):
            return True
        return last and self._look(run)

    def _train_blanked(self, ctx: Context) -> None:
        """The blanked model's steps on the run's batches since its last piece."""
        p, chunk = self.p, self.chunk
        self.recent, self.chunk = chunk, []  # the look recalibrates on the last ones
        if self.done == 0 and self.normalised:
            g = ctx.generator(_streams.BLANK_NOISE)
            self.noise = Noise.fit([primary(b.x) for b in chunk], g)
        self.blanked = [
            ctx.pipeline.with_inputs(b, blank(b.x, p.token_id, self.noise)) for b in chunk
        ]
        assert self.base is not None
        with on_device(ctx.device, self.base, self.opt_base):
            n = len(chunk)
            self.curves["blanked inputs"] += train_steps(
                ctx, self.base, self.blanked, n, self.opt_base
            )
        self.done = self.steps

    def _look(self, run: Run) -> bool:
        """Both models on the held-out sets; True once decided."""
        ctx, p, pl = run.ctx, self.p, self.pl
        real_losses = _look_at(ctx, run.model, self.recent, pl, p)
        assert self.base is not None
        with on_device(ctx.device, self.base, self.opt_base):
            base_losses = _look_at(ctx, self.base, self.blanked, pl, p, p.token_id, self.noise)
        self.recent, self.blanked = [], []
        if not all(math.isfinite(v) for c in self.curves.values() for v in c):
            return True
        self.sets = {k: Judged(real_losses[k], base_losses[k]) for k in pl.judged}
        if all(j.p_value < self.level for j in self.sets.values()):
            return True
        # past the budget only while a FAIL would be for want of training
        if self.steps >= p.max_steps:
            self.unlearnt = _unlearnt(self.sets, self.start_, self.prior, self.curves, p)
            if not self.unlearnt or not any(
                u.p_below < p.alpha for u in weigh(self.sets, self.level, p)
            ):
                return True
        return False

    def finish(self, run: Run) -> None:
        # the run's own loss list: it grows while other observers keep the run going, so the
        # check judges the whole trajectory it is a prefix of (a spike its 30 steps end on
        # may be one the run recovered from: the nn tutorial's logistic regression at SGD 0.5)
        self.run_losses = run.losses
        self.base = self.opt_base = None  # the batches are on the device: freed with the run
        self.chunk, self.recent, self.blanked = [], [], []


@observes("input_independent")
def _observer(ctx: Context, p: InputIndependentParams) -> _Arms:
    return _Arms(ctx, p)


@register("input_independent", InputIndependentParams)
def input_independent(ctx: Context, p: InputIndependentParams) -> CheckResult:
    """A model trained on real inputs beats one trained on blanked inputs on held-out data."""
    arms = observed(ctx, "input_independent", p)  # the real-input model: the shared run's
    assert isinstance(arms, _Arms)
    curves, sets, steps, noise = arms.curves, arms.sets, arms.steps, arms.noise
    start, prior, unlearnt, level = arms.start_, arms.prior, arms.unlearnt, arms.level
    note = arms.pl.note
    if noise is not None:  # said in the message: the baseline is not the zeros it usually is
        said = (
            "blanked inputs are Gaussian noise with the training inputs' mean and std per "
            "element: the model normalises over the batch, where a constant input cannot train"
        )
        note = f"{said}; {note}" if note else said
    lr = arms.lr
    if unlearnt and isinstance(lr, int | float):
        unlearnt = f"at lr {lr:.3g} {unlearnt}"
    result = _judge(p, curves, sets, level, steps, note, unlearnt, arms.run_losses)
    if sets:  # how far training moved the models: what an undecided verdict rests on
        result.metrics.update(_movement(sets, start, prior))
    return result


def _marks(p: InputIndependentParams) -> list[int]:
    """The steps at which the held-out sets are looked at: every ``look_every`` up to
    ``max_steps``, then twice the steps each time up to ``extend_to``."""
    return looks(p.look_every, p.max_steps, p.extend_to)


def _movement(
    sets: dict[str, Judged], start: dict[str, np.ndarray], prior: dict[str, np.ndarray]
) -> dict[str, float]:
    """Over the held-out sets pooled: the change of the real-input model's mean loss since
    init (``real_moved``), the prior's loss (``prior_loss``), the blanked model's loss."""
    real = np.concatenate([j.real for j in sets.values()])
    return {
        "real_moved": float(real.mean() - np.concatenate([start[k] for k in sets]).mean()),
        "real_loss": float(real.mean()),
        "prior_loss": float(np.concatenate([prior[k] for k in sets]).mean()),
        "blanked_loss": float(np.concatenate([j.blanked for j in sets.values()]).mean()),
    }


def _unlearnt(
    sets: dict[str, Judged],
    start: dict[str, np.ndarray],
    prior: dict[str, np.ndarray],
    curves: dict[str, list[float]],
    p: InputIndependentParams,
) -> str:
    """Why the run is too short to rule a gain out ('' when it is not): the real-input
    model's loss moved less than ``min_move`` both on its training batches (the shared
    trajectory calls it a plateau) and on held-out data since init, or it came down by
    more than that since init and is still above the prior's loss, or the blanked model
    has not yet learnt the prior, or the real model's held-out loss is still coming down
    while on its own training batches it is not yet below the blanked model (``_behind``).
    Models whose losses agree exactly are decided: the real model's outputs do not depend
    on its input at all, whatever the lr."""
    if all(not np.any(j.gain != 0) for j in sets.values()):
        return ""
    m = _movement(sets, start, prior)
    moved, at_prior, blanked = m["real_moved"], m["prior_loss"], m["blanked_loss"]
    scale = abs(at_prior) or 1.0
    trained = judge_run(curves["real inputs"], p=replace(TRAJECTORY, plateau_drop=p.min_move))
    if trained.verdict == "plateaued" and abs(moved) < p.min_move * scale:
        return (
            f"the real-input model's loss moved less than {p.min_move:.0%}: on its training "
            f"batches (a plateau at {trained.last:.4g}) and on held-out data ({moved:+.3g} "
            f"since init, against the prior's loss {at_prior:.4g}): it has not trained yet"
        )
    real = m["real_loss"]
    if moved < -p.min_move * scale and real - at_prior > p.min_move * scale:
        # it came down from far above (unstandardised inputs: the polynomial tutorial starts
        # at 36 x the prior's loss) and is not yet down to a constant's: no gain can show
        # yet. Shuffled labels go the other way: their held-out loss rises since init
        return (
            f"the real-input model's held-out loss {real:.4g} is still falling ({moved:+.3g} "
            f"since init) and {(real - at_prior) / scale:.1%} above the prior's {at_prior:.4g}: "
            "it has not yet learnt what a constant prediction knows"
        )
    if blanked - at_prior > p.min_move * scale:
        return (
            f"the blanked model's held-out loss {blanked:.4g} is still "
            f"{(blanked - at_prior) / scale:.1%} above the prior's {at_prior:.4g}, the most a "
            "blank can learn: neither model has learnt even the label frequencies or the "
            "target mean yet"
        )
    return _behind(curves, moved, p.alpha)


def _behind(curves: dict[str, list[float]], moved: float, alpha: float) -> str:
    """'' unless the real-input model is not yet below the blanked one on the batches both
    train on (paired per step, the second half of the run: one-sided p >= ``alpha``) while
    its held-out loss is still coming down since init (``moved`` < 0). Then it has not yet
    learnt, even where it trains, more than a blank learns, so no held-out gain can show.
    The planted bugs that learn nothing from the input are not here: with the train labels
    shuffled the real model memorises its batches (below the blank's training loss, p < 1e-12
    on digits) and its held-out loss rises since init; a model ignoring its input has losses
    equal to the blank's, decided before this."""
    half = len(curves["real inputs"]) // 2
    real, blanked = (np.asarray(curves[k][half:]) for k in ("real inputs", "blanked inputs"))
    d = blanked - real  # [steps - half] per step: the same batch for both models
    p_below = paired_test(d)
    if moved >= 0 or p_below < alpha:
        return ""
    return (
        f"on its own training batches the real-input model is not yet below the blanked "
        f"model (mean {float(d.mean()):+.3g} over the last {len(d)} steps, p={p_below:.2g}) "
        f"and its held-out loss is still coming down ({moved:+.3g} since init): it has not "
        "yet learnt more than a blank learns, even where it trains"
    )


def _look_at(
    ctx: Context,
    model: nn.Module,
    recent: list[Any],
    pl: Plan,
    p: InputIndependentParams,
    token_id: int | None = None,
    noise: Noise | None = None,
) -> dict[str, np.ndarray]:
    """Per held-out set, the [N] per-example losses of ``model`` (on blanked inputs with
    ``token_id`` set, drawn from ``noise`` where given), after its BatchNorm statistics are
    recomputed on the ``recent`` batches it trained on."""
    recalibrate(ctx, model, recent[-p.bn_batches :], p.bn_batches)
    return {
        name: heldout_losses(ctx, model, loader(), p.max_eval, token_id, noise).numpy()
        for name, loader in pl.judged.items()
    }


def _set_metrics(name: str, j: Judged) -> tuple[dict[str, float], str]:
    """The tracker's numbers for one held-out set, and its clause in the message."""
    key = name.replace(" ", "_")
    lo, hi = mean_ci(j.gain)
    mean_b = float(j.blanked.mean())
    metrics = {
        f"{key}/p_value": j.p_value,
        f"{key}/loss_real": float(j.real.mean()),
        f"{key}/loss_blanked": mean_b,
        f"{key}/mean_gain": float(j.gain.mean()),
        f"{key}/mean_gain_ci_lo": lo,
        f"{key}/mean_gain_ci_hi": hi,
        f"{key}/relative_gain": float(j.gain.mean()) / mean_b if mean_b > 0 else 0.0,
        f"{key}/fraction_better": float((j.gain > 0).mean()),
        f"{key}/n": float(len(j.gain)),
    }
    text = (
        f"{name}: loss {j.real.mean():.4g} real vs {mean_b:.4g} blanked (mean gain "
        f"{j.gain.mean():.3g}, 95% CI [{lo:.3g}, {hi:.3g}], real better on "
        f"{(j.gain > 0).mean():.0%} of {len(j.gain)}; p={j.p_value:.2g})"
    )
    return metrics, text


def _more_data(u: Undecided, p: InputIndependentParams) -> str:
    """What would give the undecided sets the examples they lack."""
    ways = []
    if "test split" in u.name:
        capped = u.key == "test_split" and u.n >= p.max_eval
        ways.append(
            "a bigger test split" if not capped else "raise checks.input_independent.max_eval"
        )
    if "training slice" in u.name:
        ways.append("raise checks.input_independent.train_holdout")
    return "use more data or " + " or ".join(ways)


def _verdict(
    p: InputIndependentParams, observed: str, weighed: list[Undecided]
) -> tuple[Status, str]:
    """PASS when every set is significant; FAIL when a set's data rule out the gain it
    should show; WARN (undecided) when they cannot resolve it."""
    if not weighed:
        return Status.PASS, observed
    failed = [u for u in weighed if u.p_below < p.alpha]
    if failed:
        why = "; ".join(
            f"the gain there is below {u.against} ({u.effect:.3g}): p={u.p_below:.2g} < {p.alpha:g}"
            + (f", {u.also}" if u.also else "")
            for u in failed
        )
        # what is wrong first, the numbers after it: the first clause is what a summary keeps
        return Status.FAIL, (
            f"on the {' and the '.join(u.name for u in failed)} the model extracts no "
            f"information from its input ({why}); {observed}. Usual causes: labels "
            "misaligned with inputs (shuffled separately, off by one, a sort on one side "
            "only), the input never reaching the model (overwritten, detached, multiplied by "
            "a zero mask), train and test preprocessed differently (one set only), or a "
            "budget too small for this model/lr (raise checks.input_independent.max_steps)"
        )
    parts = [
        f"undecided: the {u.name} ({u.n} examples) cannot resolve a gain of {u.effect:.3g} "
        f"({u.against}): not significant, and not ruled out either (p={u.p_below:.2g}); "
        f"the paired test's power for that gain was {u.power:.2f}; {_more_data(u, p)}"
        + (f"; {u.also}" if u.also else "")
        for u in weighed
    ]
    return Status.WARN, f"{observed}: " + "; ".join(parts)


def _judge(
    p: InputIndependentParams,
    curves: dict[str, list[float]],
    sets: dict[str, Judged],
    level: float,
    steps: int,
    note: str,
    unlearnt: str = "",
    run_losses: list[float] | None = None,
) -> CheckResult:
    """The verdict; ``run_losses``: the whole shared run the real-input curve is a prefix of
    (its trajectory judged on all of it)."""
    series = {
        "train_loss_real": list(enumerate(curves["real inputs"])),
        "train_loss_blanked": list(enumerate(curves["blanked inputs"])),
    }
    threshold = f"p < {level:.2g} on every held-out set (alpha {p.alpha:g} over the looks)"
    diverged = [k for k, c in curves.items() if not all(math.isfinite(v) for v in c)]
    if diverged or not sets:
        msg = (
            f"training on {' and '.join(diverged)} turned the loss to NaN/Inf within "
            f"{steps} steps, so the baseline comparison could not be made: lower the learning "
            "rate (loss_decreases says more)"
        )
        fig = plots.deferred(plots.curves, curves, "training loss (same init, same batches)")
        return CheckResult(
            "input_independent",
            Status.FAIL,
            msg,
            series=series,
            figures={"compare": fig},
            threshold=threshold,
        )
    runs = {k: judge_run(c) for k, c in curves.items()}  # the shared trajectory judgement
    if run_losses and len(run_losses) > len(curves["real inputs"]):
        runs["real inputs"] = judge_run(run_losses)
    if all(t.diverging for t in runs.values()):
        why = "; ".join(f"{k}: {t.why}" for k, t in runs.items())
        fig = plots.deferred(plots.curves, curves, "training loss (same init, same batches)")
        return CheckResult(
            "input_independent",
            Status.FAIL,
            f"both models diverged within {steps} steps ({why}), so neither is better than "
            "the other in any useful sense: the learning rate is too high (lr_range measures "
            "the usable range)",
            metrics={"trajectory": runs["real inputs"].metrics()["trajectory"]},
            series=series,
            figures={"compare": fig},
            threshold=threshold,
        )
    metrics: dict[str, float] = {"steps": float(steps)}
    metrics["trajectory"] = runs["real inputs"].metrics()["trajectory"]
    parts = []
    for name, j in sets.items():
        m, text = _set_metrics(name, j)
        metrics.update(m)
        parts.append(text)
    weighed = weigh(sets, level, p)
    for u in weighed:
        metrics.update(
            {f"{u.key}/effect": u.effect, f"{u.key}/power": u.power, f"{u.key}/p_below": u.p_below}
        )
    worst = max(j.p_value for j in sets.values())
    metrics["p_value"] = worst
    observed = f"after {steps} steps each, " + "; ".join(parts) + f"; needed p < {level:.2g}"
    if note:
        observed += f" [{note}]"
    status, msg = _verdict(p, observed, weighed)
    if status == Status.FAIL and unlearnt:  # the data rule the gain out, the run cannot
        metrics["unlearnt"] = 1.0
        status = Status.WARN
        msg = (
            f"undecided after {steps} steps (budget {p.max_steps}, extended to the cap "
            f"{p.extend_to}): {unlearnt}, so no gain could show yet and none is ruled out; "
            f"{observed}. A learning rate too low for this model (a fine-tuning lr on random "
            "init) or a slow start: train longer or raise the lr to confirm (lr_range "
            "measures the usable range)"
        )
    return CheckResult(
        "input_independent",
        status,
        msg,
        metrics=metrics,
        series=series,
        figures={"compare": plots.deferred(_figure, curves, _scatter(sets))},
        value=worst,
        threshold=threshold,
    )


Scatter = dict[str, tuple[np.ndarray, np.ndarray, float]]


def _scatter(sets: dict[str, Judged]) -> Scatter:
    """Per held-out set: (blanked losses [N], real losses [N], p-value), plain data."""
    return {name: (j.blanked, j.real, j.p_value) for name, j in sets.items()}


def _figure(curves: dict[str, list[float]], sets: Scatter) -> Figure:
    """Left: both training curves. Right: held-out loss per example, blanked (x) vs real (y),
    one colour per held-out set; points below the diagonal are examples the input helped."""
    fig, (ax0, ax1) = plots.pyplot().subplots(1, 2, figsize=(9, 3.4))
    plots.fixed_margins(fig, wgap=0.8)  # wgap: the right panel's y label
    for name, ys in curves.items():
        ax0.plot(np.arange(len(ys)), ys, label=name)
    ax0.set(title="training loss (same init, same batches)", xlabel="step", ylabel="loss")
    plots.set_y_scale(ax0, *curves.values())  # log where a spike would flatten the rest
    ax0.legend(fontsize=8)
    for name, (blanked, real, p_value) in sets.items():
        ax1.scatter(blanked, real, s=8, alpha=0.5, label=f"{name} (p={p_value:.2g})")
    both = np.concatenate([np.concatenate([r, b]) for b, r, _ in sets.values()])
    lim = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    ax1.plot(lim, lim, "k--", lw=1, label="no gain")
    ax1.set(
        title="held-out loss per example",
        xlabel="blanked-input model",
        ylabel="real-input model",
    )
    ax1.legend(fontsize=8)
    return fig
