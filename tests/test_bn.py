import torch
from helpers.models import SlowBatchNormNet
from torch import nn

from trackcheck import DataSpec
from trackcheck.checks._shared._bn import batchnorms, recalibrate
from trackcheck.context import Context
from trackcheck.models import MLP
from trackcheck.pipeline import Batch
from trackcheck.training import train_steps


def _context(data: DataSpec, factory, seed: int = 0) -> Context:  # type: ignore[no-untyped-def]
    return Context(factory, data, lambda ps: torch.optim.Adam(ps, lr=3e-3), seed=seed)


@torch.no_grad()
def _accuracy(ctx: Context, model: nn.Module, train_mode: bool) -> float:
    model.train(train_mode)  # train mode: BatchNorm normalises by the batch's own statistics
    x, y = ctx.head("test", 360)
    acc = float((ctx.forward(model, x).argmax(1) == y).float().mean())
    model.train()
    return acc


def test_recalibration_gives_eval_mode_the_trained_networks_accuracy(digits_data):
    # measured over 5 seeds after 30 steps: eval mode 0.097-0.103 (chance), batch statistics
    # 0.45-0.61, recalibrated within 0.012 of the batch statistics
    ctx = _context(digits_data, SlowBatchNormNet)
    model = ctx.new_model()
    train_steps(ctx, model, ctx.train_batches(0), 30)
    stale, trained = _accuracy(ctx, model, False), _accuracy(ctx, model, True)
    assert stale < 0.2 < 0.4 < trained  # the false alarm's cause: eval mode is at chance
    assert recalibrate(ctx, model, ctx.train_batches(5)) == 4
    assert abs(_accuracy(ctx, model, False) - trained) < 0.05
    assert model.training  # the mode it was in


def test_without_batchnorm_nothing_is_drawn_or_run(digits_data):
    ctx = _context(digits_data, lambda: MLP([1, 8, 8], 10))
    model = ctx.new_model()

    def untouchable():  # type: ignore[no-untyped-def]
        raise AssertionError("a batch was drawn")
        yield

    before = ctx.meter.n_forward
    assert recalibrate(ctx, model, untouchable()) == 0
    assert ctx.meter.n_forward == before


def test_running_statistics_become_the_average_over_the_batches(digits_data):
    ctx = _context(digits_data, lambda: nn.Sequential(nn.BatchNorm1d(3, momentum=0.01)))
    model = ctx.new_model().eval()
    g = torch.Generator().manual_seed(0)
    batches = [Batch(torch.randn(16, 3, generator=g) * 5 + 2, torch.zeros(16)) for _ in range(3)]
    weight = model[0].weight.detach().clone()
    assert recalibrate(ctx, model, batches, k=3) == 3
    bn = model[0]
    means = torch.stack([b.x.mean(0) for b in batches])  # [3, 3] per batch, per channel
    variances = torch.stack([b.x.var(0) for b in batches])  # unbiased, as BatchNorm keeps it
    torch.testing.assert_close(bn.running_mean, means.mean(0))
    torch.testing.assert_close(bn.running_var, variances.mean(0))
    assert bn.momentum == 0.01 and not model.training  # restored
    assert torch.equal(bn.weight, weight)  # only buffers change


def test_leaves_the_random_stream_of_later_training_untouched(digits_data):
    # dropout runs during the train-mode forwards; the generator is forked around them
    ctx = _context(digits_data, SlowBatchNormNet)
    model = ctx.new_model()
    model.head = nn.Sequential(nn.Dropout(0.5), model.head)
    state = torch.get_rng_state()
    recalibrate(ctx, model, ctx.train_batches(5))
    assert torch.equal(torch.get_rng_state(), state)


def test_finds_every_batchnorm_that_keeps_running_statistics():
    model = nn.Sequential(
        nn.BatchNorm1d(2), nn.BatchNorm2d(2, track_running_stats=False), nn.LayerNorm(2)
    )
    assert [type(m) for m in batchnorms(model)] == [nn.BatchNorm1d]
    assert len(batchnorms(SlowBatchNormNet())) == 5
