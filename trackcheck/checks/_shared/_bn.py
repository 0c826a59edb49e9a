"""BatchNorm running statistics recomputed on training batches before an eval-mode judgment.

A check that trains a model for a few dozen steps and then judges it in eval mode judges it
with BatchNorm's running statistics. Those are an exponential average that starts at mean 0,
variance 1 and moves ``momentum`` of the way to each batch's statistics per step: after
``s`` steps they still carry ``(1 - momentum) ** s`` of the initial values. At PyTorch's
default 0.1 that is 0.2% after 60 steps; at torchvision MobileNetV3's 0.01 it is 55%, so the
eval-mode network is not the one that was trained (issue 8, MobileNetV3-small: eval accuracy
11.7% against 95.5% with batch statistics; the small MobileNetV3-style net of
tests/test_bn.py after 30 steps on digits: 10% against 45-61%, and within 1.2 points of the
latter once recalibrated). A full training run does not have this problem: thousands of
steps wash the initial values out.

:func:`recalibrate` does what those thousands of steps would have done: for every BatchNorm
module that tracks running statistics it resets them, switches to a cumulative average
(``momentum=None``) and forwards ``k`` training batches in train mode under ``no_grad``, so
the running statistics become the plain average of those batches' statistics at the current
weights. Then the momenta and the model's mode are restored. Only BatchNorm buffers change:
no gradient flows and no parameter moves. Train mode also runs dropout during those forwards,
as the user's training does while it accumulates the statistics; the random number generator
is forked around them, so the dropout masks (and anything else random) that later training
steps draw are the same as without the recalibration.

Only ``torch.nn.modules.batchnorm._BatchNorm`` (BatchNorm1d/2d/3d, SyncBatchNorm, the lazy
variants) is recalibrated: InstanceNorm's running statistics ignore ``momentum=None`` (its
functional form takes 0.0 then, freezing them), and GroupNorm/LayerNorm keep none. A model
without such a module costs nothing: no batch is drawn, no forward is run.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from itertools import islice

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from trackcheck.context import Context
from trackcheck.pipeline import Batch

# Training batches whose statistics are averaged. The running mean after k batches of B
# examples is a mean over k*B examples, so its standard error is sigma / sqrt(k * B) in the
# channel's own units (less on feature maps, whose positions add samples); the variance's
# relative standard error is about sqrt(2 / (k * B)). Training normalises every batch by that
# batch's own statistics, whose error is sigma / sqrt(B): the network is trained to tolerate
# that much. k = 4 halves it (B = 64: SE 0.06 sigma for the mean, 9% for the variance), at the
# cost of 4 gradient-free forwards, about 1.3 training steps' worth: measured on resnet/digits
# (median of 3, 2 cores) input_independent 0.63 -> 0.73 s, human_baseline 0.43 -> 0.50 s.
CALIBRATION_BATCHES = 4


# model -> its BatchNorm modules: prediction_dynamics recalibrates one model at every
# recorded step, and walking a deep model's modules each time costs more than the forward
# of a small one. Weak keys: a model's entry goes with the model.
_FOUND: weakref.WeakKeyDictionary[nn.Module, list[_BatchNorm]] = weakref.WeakKeyDictionary()


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm modules of ``model`` whose eval mode uses running statistics."""
    if model not in _FOUND:
        _FOUND[model] = [
            m
            for m in model.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
        ]
    return _FOUND[model]


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorms(model))


@torch.no_grad()
def recalibrate(
    ctx: Context, model: nn.Module, batches: Iterable[Batch], k: int = CALIBRATION_BATCHES
) -> int:
    """Recompute the running statistics of ``model``'s BatchNorm modules as the cumulative
    average over the first ``k`` of ``batches`` (training batches, as the model was trained
    on them); return how many batches were forwarded (0: no BatchNorm, nothing drawn).

    The model is left in the mode it was in; momenta are restored, also on an exception.
    """
    bns = batchnorms(model)
    if not bns or k <= 0:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    used = 0
    cuda = ctx.device.type == "cuda"
    devices = [ctx.device.index or torch.cuda.current_device()] if cuda else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        try:
            for m in bns:
                m.reset_running_stats()  # mean 0, var 1, num_batches_tracked 0
                m.momentum = None  # cumulative average: batch t gets weight 1/t
            model.train()
            for b in islice(batches, k):
                ctx.forward(model, b.x)
                used += 1
        finally:
            for m, mom in zip(bns, momenta, strict=True):
                m.momentum = mom
            model.train(was_training)
    return used
