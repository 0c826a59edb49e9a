"""output_range: after a short fit, the outputs can reach the targets' range."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from conftest import blobs, run_check
from helpers.models import SoftmaxBeforeCE
from torch import nn
from torch.utils.data import TensorDataset

from trackcheck import DataSpec
from trackcheck.core import Status
from trackcheck.models import MLP
from trackcheck.tasks import make_task


def standardised(data: DataSpec) -> DataSpec:
    """Regression targets with mean 0 and std 1 (half of them negative)."""
    (xtr, ytr), (xte, yte) = data.train.tensors, data.test.tensors  # type: ignore[attr-defined]
    m, s = ytr.mean(), ytr.std()
    return dataclasses.replace(
        data, train=TensorDataset(xtr, (ytr - m) / s), test=TensorDataset(xte, (yte - m) / s)
    )


class ReluHead(MLP):
    """Planted bug: a ReLU after the regression head."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class SigmoidBeforeCE(MLP):
    """Planted bug: sigmoid probabilities where cross-entropy expects logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(x))


def test_relu_after_the_regression_head_fails() -> None:
    r = run_check("output_range", lambda: ReluHead([8], 1), standardised(blobs("regression")))
    assert r.status == Status.FAIL, r.message
    assert "predictions never go below 0 after" in r.message
    assert "of targets are below it" in r.message and "a ReLU" in r.message
    assert r.value > 0.3  # E[y^2; y < 0] / Var(y) = 0.5 for symmetric targets


def test_plain_linear_regression_head_passes() -> None:
    r = run_check("output_range", lambda: MLP([8], 1), standardised(blobs("regression")))
    assert r.status == Status.PASS, r.message


def test_relu_head_on_positive_targets_passes() -> None:
    # targets around 50: a head that cannot go below 0 loses nothing
    data = blobs("regression", y_shift=50.0)
    r = run_check("output_range", lambda: ReluHead([8], 1, out_bias=50.0), data)
    assert r.status == Status.PASS, r.message
    assert r.value == 0.0


def test_softmax_inside_the_classifier_fails() -> None:
    r = run_check("output_range", lambda: SoftmaxBeforeCE([8], 4), blobs())
    assert r.status == Status.FAIL, r.message
    assert "logits never leave [" in r.message and "each output row sums to 1" in r.message
    # logits in [0, 1]: the best cross-entropy is ln(1 + 3/e) = 0.74 of ln 4 = 1.39
    assert abs(r.metrics["bounded_loss"] - 0.742) < 0.02


def test_sigmoid_inside_the_classifier_fails() -> None:
    r = run_check("output_range", lambda: SigmoidBeforeCE([8], 4), blobs())
    assert r.status == Status.FAIL, r.message
    assert "a sigmoid" in r.message


def test_classifier_with_logits_passes() -> None:
    r = run_check("output_range", lambda: MLP([8], 4), blobs())
    assert r.status == Status.PASS, r.message


def test_a_dead_relu_head_is_caught_by_its_clamp_alone() -> None:
    # seed 2: the ReLU head dies early (every output 0, the loss stays at the prior): no
    # doubling moves the cost, but nothing is "used" either; the clamp itself is the proof
    data = standardised(blobs("regression"))
    r = run_check("output_range", lambda: ReluHead([8], 1), data, seed=2)
    assert r.status == Status.FAIL, r.message
    assert "predictions never go below 0" in r.message


def test_the_quickstart_mlp_at_its_sgd_lr_passes(digits_data) -> None:
    # the PyTorch quickstart's network (784-512-512-10 there, 64 inputs here), SGD 1e-3
    def quickstart() -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
            nn.Linear(512, 10),
        )  # fmt: skip

    r = run_check(
        "output_range", quickstart, digits_data, optimizer=lambda ps: torch.optim.SGD(ps, 1e-3)
    )
    assert r.status == Status.PASS, r.message


def polynomial_data(seed: int = 0) -> DataSpec:
    """pytorch/examples regression/main.py: y = f(x) . W + b with features x, x^2, x^3, x^4,
    W and b drawn x5; heavy-tailed targets (x^4)."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(4, generator=g) * 5, torch.randn(1, generator=g) * 5
    x = torch.randn(512, generator=g)
    f = torch.stack([x**i for i in range(1, 5)], 1)  # [N, 4]
    y = f @ w + b
    return DataSpec(
        TensorDataset(f[:384], y[:384]), TensorDataset(f[384:], y[384:]),
        make_task("regression"), batch_size=32,
    )  # fmt: skip


def poly_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(out.squeeze(-1), y)


def poly_step(model: nn.Module, batch, opt) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The example's own loop: plain SGD at 0.1 written out, the optimizer unused."""
    f, y = batch
    model.zero_grad()
    loss = poly_loss(model(f), y)
    loss.backward()
    for p in model.parameters():
        p.data.add_(-0.1 * p.grad)
    return loss


def test_a_polynomial_fit_by_its_own_sgd_loop_passes() -> None:
    # seed 0: the lower edge rests from step 24 to 48 (the bound would cost 6.3% of the
    # prior's gap both times), then moves on: one lull is not a bound
    r = run_check(
        "output_range", lambda: nn.Linear(4, 1), polynomial_data(0), loss=poly_loss, step=poly_step
    )
    assert r.status == Status.PASS, r.message
    assert r.metrics["steps"] > 48


def nin_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, 1, 1), nn.ReLU(), nn.Conv2d(c_out, c_out, 1), nn.ReLU(),
        nn.Conv2d(c_out, c_out, 1), nn.ReLU(),
    )  # fmt: skip


def nin() -> nn.Module:
    """d2l's NiN (channels / 12 for 8x8 digits): its logits come out of a ReLU and a global
    average pool, so none is below 0, and cross-entropy needs none to be."""
    return nn.Sequential(
        nin_block(1, 8), nn.MaxPool2d(3, 2), nin_block(8, 16), nn.MaxPool2d(3, 2),
        nn.Dropout(0.5), nin_block(16, 10), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
    )  # fmt: skip


def test_a_relu_headed_nin_on_a_plateau_is_not_failed(digits_data) -> None:
    # at the book's SGD 0.1 the loss sits at ln 10 for hundreds of steps: its upper edge
    # stalls with it. Its 0 floor is a clamp that costs cross-entropy nothing.
    r = run_check("output_range", nin, digits_data, optimizer=lambda ps: torch.optim.SGD(ps, 0.1))
    assert r.status in (Status.PASS, Status.WARN), r.message
    assert r.metrics["low_edge"] == 0.0
