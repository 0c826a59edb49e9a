"""gradient flow: every layer gets a usable gradient over a few training steps.

Per weight tensor (layers in forward order): the mean and max |grad| (the classic
gradient-flow figure) and the update-to-weight ratio ||lr * update|| / ||w|| (Karpathy's
~1e-3 heuristic). It names vanishing gradients (early layers getting a tiny fraction of the
last layer's gradient), exploding ones (early layers far above the last, or norms growing by
orders of magnitude over the steps), ReLU layers whose units never fire (dead), trainable
parameters that never get a gradient (unused), and frozen parts: a frozen output layer or an
all-frozen model fails, a frozen backbone is reported as information (fine-tuning).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from trackcheck.checks._shared._common import output_layer, tied_to_embedding
from trackcheck.checks._shared._run import observed, observes
from trackcheck.checks.gradient_flow._grad_probe import FlowObserver, Trace
from trackcheck.checks.gradient_flow._grad_report import (
    NAME,
    Finding,
    Judged,
    finding_note,
    ratios,
    report,
    result,
    update_medians,
    update_share,
    with_finding_note,
)
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.registry import register


@dataclass
class GradientFlowParams:
    # training steps probed: enough for a parameter behind a zero-initialised gate (ReZero,
    # zero_init_residual) to get its first gradient on the second step, and for a growing
    # norm to show; they are the first steps of the stage's shared training run
    # (checks/_shared/_run.py), which the other training checks read too
    steps: int = 3
    # vanishing: a layer whose mean |grad| is below vanish_ratio of the last layer's AND
    # whose update/weight ratio is below vanish_update_share of the last layer's. A small
    # gradient alone is no fault: Adam scales each update by 1/|grad|, and correct models
    # have tiny ones by design (ConvNeXt's blocks sit behind a layer scale of 1e-6: 8e-6 of
    # the classifier's mean |grad|; BERT's query/key at init: 1.5e-5), yet they move as fast
    # as the head. At 1e-6, SGD moves a layer a millionth as fast as the output layer; under
    # Adam the update shrinks by |g| / (|g| + eps), so a 1% share means |g| ~ eps / 100.
    # Measured (3 steps, Adam 3e-3, seeds 0-4): no correct model has a layer below 1e-6
    # (shipped ResNet >= 0.015, MLP >= 0.09, GPT >= 0.22; Hugging Face GPT-2 >= 0.2, ViT
    # >= 6e-4, BERT >= 1.5e-5, ConvNeXt >= 7.8e-6, ResNet >= 0.11, MobileNetV2 >= 0.29);
    # a 20-layer sigmoid stack at default init: 7e-18 (first layer), 12 layers: 4.5e-11
    vanish_ratio: float = 1e-6
    vanish_update_share: float = 0.01
    # exploding: a layer whose mean |grad| is above this multiple of the last layer's (the
    # mirror image of vanish_ratio), or a gradient norm that grows by more than max_growth
    # over the steps (measured on the models above: at most 2.1x in 3 steps, BERT; the
    # largest layer ratio 750x, MobileNetV2's; SGD on a regression MLP grows it 22x in 3
    # steps at lr 1, 3600x at lr 2, where it diverges)
    explode_ratio: float = 1e6
    max_growth: float = 100.0
    # update/weight ratio per step (Karpathy: ~1e-3). Far below it (3 orders) the learning
    # rate cannot move the weights in any training run: warned, as a learning rate issue
    update_ratio_floor: float = 1e-6
    # dead units: a ReLU-family layer whose units never fire on any of the probed batches.
    # Correct ReLU nets have some (measured at most 5% of a layer: the shipped MLPs; the
    # ResNets and MobileNetV2 0%); a bias of -10 kills all (100%). Judged only where each
    # unit saw >= min_dead_samples values: a healthy unit firing half the time is silent on
    # all of them with p = 2^-samples
    max_dead_share: float = 0.9
    min_dead_samples: int = 16
    # trainable parameters allowed to get no gradient (fnmatch patterns on their names, e.g.
    # "bert.pooler.*" for a pooler your head does not use)
    allow_unused: list[str] = field(default_factory=list)


@observes(NAME)
def _observer(_ctx: Context, p: GradientFlowParams) -> FlowObserver:
    return FlowObserver(p.steps)


@register(NAME, GradientFlowParams, fast=False)
def gradient_flow(ctx: Context, p: GradientFlowParams) -> CheckResult:
    """Every layer gets a usable gradient: no vanishing, exploding, dead or unused parts."""
    model = ctx.new_model()
    frozen = [n for n, q in model.named_parameters() if not q.requires_grad]
    if not any(q.requires_grad for q in model.parameters()):
        what = f"all {len(frozen)} parameter tensors are frozen (requires_grad=False)"
        fix = "nothing can learn: unfreeze what should train (requires_grad_(True))"
        return result(Status.FAIL, f"{what}: {fix}", [("frozen", what, fix)])
    fails: list[Finding] = []
    notes: list[str] = []
    head = _frozen_head(ctx, model) if frozen else None
    if head is not None:
        fails.append(head)
    elif frozen:
        notes.append(
            f"{len(frozen)} parameter tensors are frozen (e.g. {_names(frozen)}): a frozen "
            "backbone, as in fine-tuning"
        )
    del model  # the probed steps are the first of the stage's shared run (one model at a time)
    probed = observed(ctx, NAME, p)
    assert isinstance(probed, FlowObserver) and probed.trace is not None
    trace, finite = probed.trace, probed.finite
    if not finite:
        what = f"the training loss is {trace.losses[-1]} at step {len(trace.losses) - 1}"
        fails.append(("exploding", what, "see the finite check for where it turns non-finite"))
    ratio = ratios(trace)
    flow, dead = _flow(trace, ratio, p), _dead(trace, p)
    unused = _unused(trace, p, behind_dead=bool(dead))
    # parameters of modules that never run are waste (and break DDP), not a training bug: a
    # pretrained model's unused pooler is a correct setup; a detached output is the bug
    never = bool(unused) and set(trace.no_grad) <= set(trace.not_called)
    fails += flow + dead + ([] if never else unused)
    warns = [] if any(k == "vanishing" for k, _, _ in flow) else _slow_updates(trace, ratio, p)
    warns += unused if never else []
    status = Status.FAIL if fails else Status.WARN if warns else Status.PASS
    limits = (p.vanish_ratio, p.explode_ratio)
    judged = Judged(
        *limits,
        max_growth=p.max_growth,
        vanish_update_share=p.vanish_update_share,
        max_dead_share=p.max_dead_share,
        min_dead_samples=p.min_dead_samples,
    )
    return report(status, trace, ratio, fails + warns, notes, limits, judged)


def _frozen_head(ctx: Context, model: nn.Module) -> Finding | None:
    """A frozen output layer, or None. A language model's frozen head is left to the
    frozen-parts note: LoRA and tied-embedding fine-tuning freeze it on purpose."""
    if ctx.task.name == "lm":
        return None
    found = output_layer(ctx, model, ctx.head("train", 2).x)  # a forward: only when frozen
    if found is None or tied_to_embedding(model, found[1]):
        return None
    name, layer = found
    if all(q.requires_grad for q in layer.parameters()):
        return None
    what = f"the output layer {name} is frozen (requires_grad=False)"
    fix = "the prediction cannot learn the task: unfreeze it (requires_grad_(True))"
    return ("frozen", what, fix)


def _reference(trace: Trace, ratio: np.ndarray) -> str:
    got = np.flatnonzero(np.isfinite(ratio))
    return trace.layers[got[-1]] if len(got) else "?"


def _flow(trace: Trace, ratio: np.ndarray, p: GradientFlowParams) -> list[Finding]:
    """Vanishing and exploding: layers far below or above the last layer, a growing norm."""
    out: list[Finding] = []
    n, ref = int(np.isfinite(ratio).sum()), _reference(trace, ratio)
    share = update_share(trace, ratio)
    low = [
        i for i, r in enumerate(ratio) if r < p.vanish_ratio and share[i] < p.vanish_update_share
    ]
    if low:
        first = trace.layers[low[0]]
        out.append(
            (
                "vanishing",
                f"{len(low)} of {n} layers get < {p.vanish_ratio:g} of the last layer's gradient "
                f"and move < {p.vanish_update_share:.0%} as fast (vanishing; {first}: "
                f"{ratio[low[0]]:.2g} of {ref}'s mean |grad|, {share[low[0]]:.2g} of its update)",
                "the signal dies on its way back: saturating activations (sigmoid/tanh) in a "
                "deep stack, too small an init, or no residual/normalisation; use ReLU/GELU, "
                "He/Xavier init, residual connections or normalisation layers",
            )
        )
    high = [i for i, r in enumerate(ratio) if r > p.explode_ratio]
    if high:
        first = trace.layers[high[0]]
        out.append(
            (
                "exploding",
                f"{len(high)} of {n} layers get > {p.explode_ratio:g}x the last layer's gradient "
                f"(exploding; {first}: {ratio[high[0]]:.2g}x {ref}'s mean |grad|)",
                "the gradient grows on its way back: too large an init or a missing "
                "normalisation; clip gradients (clip_grad_norm_) and check the init",
            )
        )
    g = trace.grad_norm
    if len(g) and not np.isfinite(g).all():
        step = int(np.flatnonzero(~np.isfinite(g))[0])
        out.append(
            (
                "exploding",
                f"the gradient norm is {g[step]} at step {step}",
                "lower the learning rate, clip gradients; the finite check names where",
            )
        )
    elif len(g) > 1 and g[0] > 0 and g.max() / g[0] > p.max_growth:
        out.append(
            (
                "exploding",
                f"the gradient norm grows {g.max() / g[0]:.3g}x in {len(g)} steps "
                f"({g[0]:.3g} -> {g.max():.3g}; exploding, > {p.max_growth:g}x)",
                "the steps diverge: lower the learning rate or clip gradients (clip_grad_norm_)",
            )
        )
    return out


def _dead(trace: Trace, p: GradientFlowParams) -> list[Finding]:
    """ReLU-family layers whose units (nearly) all stay at 0 on every probed batch."""
    judged = {s: v for s, v in trace.dead.items() if trace.samples[s] >= p.min_dead_samples}
    bad = [s for s, v in judged.items() if v > p.max_dead_share]
    if not bad:
        return []
    worst = max(bad, key=lambda s: judged[s])
    return [
        (
            "dead",
            f"{len(bad)} of {len(judged)} ReLU layers have > {p.max_dead_share:.0%} dead units "
            f"({worst}: {judged[worst]:.0%} of {trace.units[worst]} never fire)",
            "no gradient passes a unit that never fires: a large negative bias, a too-large "
            "learning rate, or inputs on the wrong scale; init biases at 0, lower the learning "
            "rate, normalise inputs (or use LeakyReLU/GELU)",
        )
    ]


def _unused(trace: Trace, p: GradientFlowParams, behind_dead: bool) -> list[Finding]:
    """Trainable parameters whose gradient is None or 0 on every step."""
    bad = [n for n in trace.no_grad if not any(fnmatch.fnmatch(n, a) for a in p.allow_unused)]
    if not bad:
        return []
    never = [n for n in bad if n in trace.not_called]
    why = (
        f"{len(never)} belong to modules never called in forward (defined but not used?)"
        if never
        else "the dead units above pass them no gradient"
        if behind_dead
        else "their modules run, but their output does not reach the loss (unused or detached)"
    )
    return [
        (
            "unused",
            f"{len(bad)} trainable parameter tensors get no gradient in {len(trace.losses)} "
            f"steps ({_names(bad)})",
            f"{why}; they never train (and DistributedDataParallel fails on them). Use them, "
            "remove them, freeze them, or allow them (checks.gradient_flow.allow_unused)",
        )
    ]


def _slow_updates(trace: Trace, ratio: np.ndarray, p: GradientFlowParams) -> list[Finding]:
    """Layers that get a gradient but whose update/weight ratio is far below ~1e-3."""
    u = update_medians(trace)
    low = [i for i, v in enumerate(u) if np.isfinite(ratio[i]) and v < p.update_ratio_floor]
    if not low:
        return []
    k = low[int(np.argmin(u[low]))]
    return [
        (
            "slow",
            f"{len(low)} layers move < {p.update_ratio_floor:g} of their weight per step "
            f"({trace.layers[k]}: {u[k]:.2g}; heuristic ~1e-3)",
            "the learning rate is too low for them to train (or their gradient vanishes)",
        )
    ]


def _names(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


__all__ = ["GradientFlowParams", "finding_note", "gradient_flow", "with_finding_note"]
