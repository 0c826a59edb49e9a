"""gradient_flow: vanishing, exploding, dead, unused and frozen parts are named; correct
models pass."""

from __future__ import annotations

import torch
from conftest import blobs, run_check
from torch import nn

from trackcheck.core import Status
from trackcheck.models import MLP, ResNet


class Stack(nn.Module):
    """``depth`` Linear layers of ``width`` with activation ``act`` between, then a head."""

    def __init__(self, act: type[nn.Module], depth: int = 12, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = 8
        for _ in range(depth):
            layers += [nn.Linear(d, width), act()]
            d = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_deep_sigmoid_stack_is_vanishing() -> None:
    # 12 layers: the first gets ~5e-11 of the head's gradient (20 layers: ~1e-17, which
    # Adam squares into subnormal floats that make the CPU crawl)
    r = run_check("gradient_flow", lambda: Stack(nn.Sigmoid, depth=12), blobs())
    assert r.status == Status.FAIL
    assert "layers get < 1e-06 of the last layer's gradient" in r.message
    assert "(vanishing; body.0.weight" in r.message  # the first layer is the worst
    assert r.value < 1e-6


class DeadLayer(MLP):
    """Planted bug: the first hidden layer's bias at -10, so its ReLU never fires."""

    def __init__(self) -> None:
        super().__init__([8], 4, width=32)
        with torch.no_grad():
            self.body[1].bias.fill_(-10.0)


def test_relu_layer_with_bias_minus_10_is_dead() -> None:
    r = run_check("gradient_flow", DeadLayer, blobs())
    assert r.status == Status.FAIL
    assert "dead units" in r.message and "body.2" in r.message
    assert r.metrics["max_dead_share"] == 1.0


def frozen_head() -> nn.Module:
    model = MLP([8], 4, width=32)
    model.head.requires_grad_(False)
    return model


def test_frozen_classifier_fails() -> None:
    r = run_check("gradient_flow", frozen_head, blobs())
    assert r.status == Status.FAIL
    assert "output layer head is frozen" in r.message


def frozen_backbone() -> nn.Module:
    model = MLP([8], 4, width=32)
    model.body.requires_grad_(False)
    return model


def test_frozen_backbone_is_information() -> None:
    r = run_check("gradient_flow", frozen_backbone, blobs())
    assert r.status == Status.PASS, r.message
    assert "4 parameter tensors are frozen" in r.message


def test_everything_frozen_fails() -> None:
    r = run_check("gradient_flow", lambda: MLP([8], 4).requires_grad_(False), blobs())
    assert r.status == Status.FAIL
    assert "all 6 parameter tensors are frozen" in r.message


class Unused(MLP):
    """Planted bug: a layer built in __init__ and never called in forward."""

    def __init__(self) -> None:
        super().__init__([8], 4, width=32)
        self.extra = nn.Linear(32, 32)


def test_parameter_not_used_in_forward_warns() -> None:
    # waste and a DistributedDataParallel error, but a correct setup (an unused pooler)
    r = run_check("gradient_flow", Unused, blobs())
    assert r.status == Status.WARN
    assert "2 trainable parameter tensors get no gradient" in r.message
    assert "extra.weight" in r.message and "never called in forward" in r.message


class Detached(MLP):
    """Planted bug: the first layer's features are detached, so it never trains."""

    def __init__(self) -> None:
        super().__init__([8], 4, width=32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body[:3](x).detach()  # [B, 32]: flatten, linear, relu, then cut off
        return self.head(self.body[3:](h))


def test_detached_part_fails() -> None:
    r = run_check("gradient_flow", Detached, blobs())
    assert r.status == Status.FAIL
    assert "does not reach the loss" in r.message


def test_unused_parameter_can_be_allowed() -> None:
    r = run_check("gradient_flow", Unused, blobs(), {"allow_unused": ["extra.*"]})
    assert r.status == Status.PASS, r.message


def test_diverging_sgd_step_is_exploding() -> None:
    # regression with SGD at lr 2: each step multiplies the error (and the gradient)
    r = run_check(
        "gradient_flow",
        lambda: MLP([8], 1, width=32),
        blobs("regression"),
        optimizer=lambda ps: torch.optim.SGD(ps, lr=2.0),
    )
    assert r.status == Status.FAIL
    assert "the gradient norm grows" in r.message and "exploding, > 100x" in r.message


def test_correct_resnet_passes_with_the_figure(digits_data) -> None:
    r = run_check("gradient_flow", lambda: ResNet([1, 8, 8], 10), digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["layers"] == 7  # stem, 4 block convs, the shortcut conv, the head
    assert r.tables["layers"]["rows"][0][0] == "stem.0.weight"  # forward order
    assert r.tables["layers"]["rows"][-1][0] == "head.weight"
    assert str(r.figures["flow"]).endswith(".png")


def test_correct_mlp_passes() -> None:
    r = run_check("gradient_flow", lambda: MLP([8], 4, width=32), blobs())
    assert r.status == Status.PASS, r.message
