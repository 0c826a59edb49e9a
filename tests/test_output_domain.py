"""The loss's domain: models whose loss reads probabilities or log-probabilities are compared
with outputs in that domain (uniform log-probabilities, not a zero they cannot output).

The programs are re-implemented from public examples, shrunk to the shipped data:
pytorch/examples mnist/main.py (log_softmax + F.nll_loss, Adadelta lr 1.0), a sigmoid head
under nn.BCELoss (the PyTorch forum's and most tutorials' binary classifier), and a softmax
classifier trained with MSE against one-hot targets (Nielsen's "quadratic cost").
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check
from torch import nn
from torch.utils.data import TensorDataset

from trackcheck import DataSpec, run
from trackcheck.checks._shared._domain import output_domain
from trackcheck.context import Context
from trackcheck.core import Status
from trackcheck.data.spec import from_datasets
from trackcheck.models import MLP
from trackcheck.pipeline import Pipeline, PipelineError


class MnistNet(nn.Module):
    """pytorch/examples mnist/main.py's Net, fc1 sized for 8x8 digits (64 x 2 x 2 after the
    pool instead of 64 x 12 x 12)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(256, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)  # [B, 64, 2, 2]
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)  # [B, 10] log-probabilities


class SigmoidBinary(nn.Module):
    """Linear-ReLU-Linear-Sigmoid, probabilities [B] for nn.BCELoss."""

    def __init__(self, d: int = 30) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class SoftmaxMLP(MLP):
    """An MLP whose forward returns softmax probabilities (for the MSE-on-one-hot loss)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(-1)


def mse_one_hot(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, F.one_hot(y.long(), out.shape[-1]).float())


CHECKS = ["loss_at_init", "overfit_batch", "output_range"]


def _run(model, data, loss, optimizer, **kw):  # type: ignore[no-untyped-def]
    report = run(model, data, checks=CHECKS, loss=loss, optimizer=optimizer, progress=False, **kw)
    return {c.name: c for c in report.checks}


def test_log_softmax_with_nll_loss_passes(digits_data) -> None:
    # before: "expected 0 for a zero output" and "expected <= -28.5" (nll of free outputs)
    r = _run(MnistNet, digits_data, F.nll_loss, lambda ps: torch.optim.Adadelta(ps, lr=1.0))
    assert all(c.status == Status.PASS for c in r.values()), {k: c.message for k, c in r.items()}
    assert r["loss_at_init"].metrics["expected_uniform"] == pytest.approx(2.3026, abs=1e-3)
    assert r["overfit_batch"].metrics["floor_loss"] == pytest.approx(0.0, abs=1e-3)
    assert "read as log-probabilities" in r["loss_at_init"].message


def test_sigmoid_with_bce_loss_passes(cancer_data) -> None:
    # before: loss_at_init and output_range raised "all elements of input should be between
    # 0 and 1" (zero and free outputs fed to BCELoss)
    r = _run(SigmoidBinary, cancer_data, nn.BCELoss(), lambda ps: torch.optim.Adam(ps, lr=1e-3))
    assert all(c.status == Status.PASS for c in r.values()), {k: c.message for k, c in r.items()}
    assert r["loss_at_init"].metrics["expected_uniform"] == pytest.approx(0.6931, abs=1e-3)


def test_softmax_with_mse_on_one_hot_targets_passes(digits_data) -> None:
    # a zero output costs 1/C = 0.1, uniform probabilities (C-1)/C^2 = 0.09: the model at
    # init (0.0908) was "below the band"
    r = _run(
        lambda: SoftmaxMLP([1, 8, 8], 10),
        digits_data,
        mse_one_hot,
        lambda ps: torch.optim.Adam(ps, lr=1e-3),
    )
    assert all(c.status == Status.PASS for c in r.values()), {k: c.message for k, c in r.items()}
    assert r["loss_at_init"].metrics["expected_uniform"] == pytest.approx(0.09, abs=1e-4)


def _domain(model: nn.Module, data, loss) -> str:  # type: ignore[no-untyped-def]
    ctx = Context(lambda: model, data, torch.optim.Adam, pipeline=Pipeline(loss=loss))
    x, y = ctx.head("train", 8)
    with torch.no_grad():
        return output_domain(ctx, model(x), y)


def test_a_loss_that_reads_logits_keeps_logits_even_when_the_model_outputs_probabilities(
    digits_data,
) -> None:
    # softmax before a (smoothed) cross-entropy is a bug the checks must see in logit terms
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert _domain(SoftmaxMLP([1, 8, 8], 10), digits_data, ce) == "logits"
    assert _domain(MLP([1, 8, 8], 10), digits_data, ce) == "logits"


def test_nll_loss_on_raw_logits_is_not_read_as_log_probabilities(digits_data) -> None:
    # the outputs do not exp-sum to 1: log-probabilities were expected and logits given,
    # a wiring bug left visible (the floor of nll over free logits is unbounded below)
    assert _domain(MLP([1, 8, 8], 10), digits_data, F.nll_loss) == "logits"
    assert _domain(MnistNet(), digits_data, F.nll_loss) == "log_probs"


def test_binary_losses_are_told_apart(cancer_data) -> None:
    assert _domain(SigmoidBinary(), cancer_data, nn.BCELoss()) == "probs"
    assert _domain(SigmoidBinary(), cancer_data, nn.MSELoss()) == "probs"
    # BCE with logits after a sigmoid: the loss reads logits, the second sigmoid is the bug
    assert _domain(SigmoidBinary(), cancer_data, nn.BCEWithLogitsLoss()) == "logits"


def test_the_user_can_say_the_domain(digits_data) -> None:
    r = run_check(
        "loss_at_init",
        MnistNet,
        digits_data,
        loss=F.nll_loss,
        pipeline=Pipeline(output_domain="log_probs"),
    )
    assert r.status == Status.PASS, r.message
    with pytest.raises(PipelineError, match="output_domain"):
        Pipeline(output_domain="softmax")


class SigmoidColumn(SigmoidBinary):
    """The same head returning [B, 1], for targets stored as [N, 1] (Keras-style)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_sigmoid_bce_with_column_targets_draws_its_overlay(cancer_data) -> None:
    # before: the whole stage raised "only 0-dimensional arrays can be converted to Python
    # scalars" drawing overfit_batch's overlay of [B, 1] labels
    (xtr, ytr), (xte, yte) = cancer_data.train.tensors, cancer_data.test.tensors
    data = dataclasses.replace(
        cancer_data,
        train=TensorDataset(xtr, ytr.reshape(-1, 1)),
        test=TensorDataset(xte, yte.reshape(-1, 1)),
    )
    r = run_check(
        "overfit_batch",
        SigmoidColumn,
        data,
        loss=nn.BCELoss(),
        optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-2),
    )
    assert r.status == Status.PASS, r.message
    assert Path(r.figures["overlay"]).is_file()


# --- regression whose loss reads probabilities: pytorch/examples' VAE -------------------------


def _pixels() -> DataSpec:
    """8x8 digits as pixels in [0, 1], each image its own target [N, 64] (an autoencoder)."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    tr, te = TensorDataset(x[:1400], x[:1400]), TensorDataset(x[1400:], x[1400:])
    return from_datasets(tr, te, "regression", 64, batch_size=64)


class SigmoidDecoder(nn.Module):
    """An autoencoder with a sigmoid output, pytorch/examples vae/main.py's decoder head."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.enc, self.dec = nn.Linear(64, 16), nn.Linear(16, 64)
        with torch.no_grad():
            self.dec.weight.mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(F.relu(self.enc(x))))  # [B, 64] in (0, 1)


def summed_bce(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(recon, x, reduction="sum")  # as the VAE's loss_function


def test_a_sigmoid_decoder_under_binary_cross_entropy_passes_loss_at_init() -> None:
    # before: ERROR "all elements of input should be between 0 and 1" (the noisy references
    # of a regression task were fed to BCE as values)
    data = _pixels()
    r = run_check("loss_at_init", SigmoidDecoder, data, loss=summed_bce)
    assert r.status == Status.PASS, r.message
    assert r.metrics["expected_uniform"] == pytest.approx(64 * math.log(2), rel=1e-3)
    assert "read as probabilities" in r.message
    assert _domain(SigmoidDecoder(), data, summed_bce) == "probs"
    assert _domain(SigmoidDecoder(), data, nn.MSELoss()) == "logits"  # values, as before


def test_a_saturated_sigmoid_decoder_still_fails_loss_at_init() -> None:
    # the planted bug: the decoder's weights x30 saturate the sigmoid at init
    r = run_check("loss_at_init", lambda: SigmoidDecoder(30.0), _pixels(), loss=summed_bce)
    assert r.status == Status.FAIL and "above the band" in r.message, r.message


def test_init_bias_advises_the_logit_of_the_mean_for_a_sigmoid_decoder() -> None:
    # the bias that makes sigmoid(bias) the mean pixel, not the mean pixel itself
    data = _pixels()
    r = run_check("init_bias", SigmoidDecoder, data, loss=summed_bce)
    mean = r.metrics["target_mean"]
    assert f"{math.log(mean / (1 - mean)):.3g}" in r.message, r.message
