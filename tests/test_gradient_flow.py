"""gradient_flow: vanishing, exploding, dead, unused and frozen parts are named; correct
models pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import blobs, run_check
from helpers.models import Stack
from matplotlib.figure import Figure
from torch import nn

from trackcheck import plots
from trackcheck.checks.gradient_flow._grad_probe import Trace
from trackcheck.checks.gradient_flow._grad_report import Judged, ratios, report
from trackcheck.core import Status
from trackcheck.models import MLP, ResNet


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


# --- the figure: what the check judged, readable ------------------------------------------
def growing_trace() -> Trace:
    """Two layers over 3 steps, the gradient norm growing 1000x; one ReLU site, 95% dead."""
    mean = np.array([[1e-2, 1e-1], [1.0, 10.0], [5.0, 50.0]])  # [S, L]
    return Trace(
        layers=["body.0.weight", "head.weight"],
        mean_abs=mean,
        max_abs=mean * 3,
        update=np.full((3, 2), 1e-3),
        grad_norm=np.array([0.5, 50.0, 500.0]),
        no_grad=[],
        not_called=[],
        dead={"body.1": 0.95},
        units={"body.1": 32},
        samples={"body.1": 64},
        losses=[2.3, 40.0, 900.0],
    )


def drawn(trace: Trace) -> Figure:
    judged = Judged(
        1e-6, 1e6, max_growth=100.0, vanish_update_share=0.01, max_dead_share=0.9,
        min_dead_samples=16,
    )  # fmt: skip
    res = report(Status.FAIL, trace, ratios(trace), [], [], (1e-6, 1e6), judged)
    fig = res.figures["flow"]
    assert isinstance(fig, plots.Deferred)
    return fig.draw()


def test_the_figure_draws_the_gradient_norm_per_step_against_its_growth_limit() -> None:
    norm, layers, dead = drawn(growing_trace()).axes
    line = norm.get_lines()[0]
    assert list(line.get_ydata()) == [0.5, 50.0, 500.0]  # the series judged, per step
    (limit,) = [ln for ln in norm.get_lines() if ln.get_linestyle() == "--"]
    assert limit.get_ydata()[0] == pytest.approx(0.5 * 100)  # step 0's norm x max_growth
    assert norm.get_yscale() == "log"
    assert "grows 1e+03x (limit 100x)" in norm.get_title()
    assert norm.title.get_color() == "tab:red"


def test_the_figure_names_each_layer_readably_and_each_dead_site_against_its_limit() -> None:
    _, layers, dead = drawn(growing_trace()).axes
    names = [t.get_text() for t in layers.get_yticklabels()]
    assert names == ["body.0.weight", "head.weight"]  # forward order, horizontal text
    assert all(t.get_rotation() == 0 and t.get_fontsize() >= 9 for t in layers.get_yticklabels())
    assert [t.get_text() for t in dead.get_yticklabels()] == ["body.1"]
    assert "1 beyond the limit" in dead.get_title()


def test_the_figure_marks_red_only_the_layers_the_check_names() -> None:
    """Vanishing is a tiny gradient AND a slow update (Adam rescales a tiny gradient):
    a layer with only the first stays blue, one with no gradient at all is greyed."""
    trace = growing_trace()
    trace.layers = ["slow.weight", "fast.weight", "none.weight", "head.weight"]
    trace.mean_abs = np.tile([1e-9, 1e-9, 0.0, 1.0], (3, 1))
    trace.max_abs = trace.mean_abs * 2
    trace.update = np.tile([1e-9, 1e-3, 0.0, 1e-3], (3, 1))  # slow: 1e-6 of the head's move
    trace.grad_norm = np.array([1.0, 1.0, 1.0])
    _, layers, _ = drawn(trace).axes
    ticks = {t.get_text(): t.get_color() for t in layers.get_yticklabels()}
    assert ticks == {
        "slow.weight": "tab:red",
        "fast.weight": "k",
        "none.weight (no gradient)": "0.5",
        "head.weight": "k",
    }
    assert "1 of 4 beyond the limits" in layers.get_title()


def test_the_figure_of_a_run_whose_gradients_went_non_finite_is_drawn(tmp_path):
    # a diverged run (SGD 100 on a regression head): |grad| inf or nan on every layer, the
    # norm non-finite from step 1. The figure still saves; the finite bars are drawn
    import numpy as np

    from trackcheck import render
    from trackcheck.checks.gradient_flow import _grad_report

    judged = _grad_report.Judged(vanish_ratio=1e-3, explode_ratio=1e3, max_growth=100.0)
    fig = _grad_report.flow_figure(
        ["fc1", "fc2"],
        np.array([np.inf, np.nan]),
        np.array([np.inf, np.nan]),
        [3.0, float("inf"), float("nan")],
        judged,
        {},
        [True, False],
    )
    path = tmp_path / "flow.png"
    assert render.save(fig, path) is None
    assert path.read_bytes()[:4] == b"\x89PNG"
