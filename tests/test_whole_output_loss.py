"""A loss that takes the model's whole output (``pipeline.loss_takes="whole"``): a VAE
returning ``(recon, mu, logvar)`` trained with pytorch/examples' loss, binary cross-entropy
of the reconstruction (summed) plus the KL term on ``(mu, logvar)``, written as the user
writes it: ``def vae_loss(out, x): recon, mu, logvar = out``.

The model is pytorch/examples' VAE (vae/main.py), tiny: 8x8 digits (64 pixels in [0, 1]),
hidden 32, latent 4, sigmoid decoder; the target is the input itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import run_check
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import TensorDataset

import trackcheck
from trackcheck import ConfigError, DataSpec, Status, from_datasets
from trackcheck.checks._shared._floor import constant_output
from trackcheck.context import Context
from trackcheck.pipeline import Pipeline, PipelineError

D = 64
WHOLE = Pipeline(loss_takes="whole")


class VAE(nn.Module):
    """``sigmoid_twice`` plants a second sigmoid on the decoder's output: the reconstruction
    can only lie in [0.5, 0.73], far from the mostly-zero pixels."""

    def __init__(self, sigmoid_twice: bool = False) -> None:
        super().__init__()
        self.sigmoid_twice = sigmoid_twice
        self.fc1, self.fc21, self.fc22 = nn.Linear(D, 32), nn.Linear(32, 4), nn.Linear(32, 4)
        self.fc3, self.fc4 = nn.Linear(4, 32), nn.Linear(32, D)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)  # [B, 4] each
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = torch.sigmoid(self.fc4(F.relu(self.fc3(z))))  # [B, 64]
        return (torch.sigmoid(recon) if self.sigmoid_twice else recon), mu, logvar


def vae_loss(out: tuple[Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
    recon, mu, logvar = out
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


@pytest.fixture(scope="module")
def pixels() -> DataSpec:
    X, _ = load_digits(return_X_y=True)
    x = torch.tensor(X, dtype=torch.float32) / 16  # [1797, 64] in [0, 1]
    train, test = TensorDataset(x[:1400], x[:1400]), TensorDataset(x[1400:], x[1400:])
    return from_datasets(train, test, "regression", 1, kind="tabular", batch_size=64)


def adam(p):  # type: ignore[no-untyped-def]
    return torch.optim.Adam(p, lr=1e-3)  # the original's optimizer


def test_the_loss_gets_the_whole_output_and_the_checks_the_reconstruction(pixels):
    ctx = Context(VAE, pixels, adam, pipeline=Pipeline(loss=vae_loss, loss_takes="whole"))
    model = ctx.new_model()
    x, y = ctx.head("train", 8)
    out = ctx.forward(model, x)
    assert out.shape == (8, D)  # the prediction: the reconstruction
    recon, mu, logvar = ctx.pipeline.whole(out)
    assert recon is out and mu.shape == logvar.shape == (8, 4)
    # per example, each with its own mu and logvar: they sum to the summed loss
    per = ctx.per_example_loss(out, y)
    assert per.shape == (8,)
    assert torch.allclose(per.sum(), vae_loss((recon, mu, logvar), y), rtol=1e-5)


def test_a_built_output_keeps_the_models_other_elements(pixels):
    ctx = Context(VAE, pixels, adam, pipeline=Pipeline(loss=vae_loss, loss_takes="whole"))
    x, y = ctx.head("train", 8)
    out = ctx.forward(ctx.new_model(), x)
    _, mu, logvar = ctx.pipeline.whole(out)
    built, mu2, logvar2 = ctx.pipeline.whole(constant_output(ctx, out))
    assert bool((built == 0).all())
    assert torch.equal(mu2, mu.detach()) and torch.equal(logvar2, logvar.detach())
    half = ctx.pipeline.rows(out, slice(0, 4))
    assert torch.equal(ctx.pipeline.whole(half)[1], mu.detach()[:4])
    with pytest.raises(trackcheck.SkipCheck, match="loss_takes=whole"):
        ctx.loss(torch.zeros_like(out), y)  # built with nothing to pair it with: not judged


@pytest.mark.parametrize(
    "check", ["contract", "loss_at_init", "overfit_batch", "output_range", "loss_decreases"]
)
def test_the_vae_with_its_whole_output_loss_passes(pixels, check):
    r = run_check(check, VAE, pixels, loss=vae_loss, optimizer=adam, pipeline=WHOLE, seed=0)
    assert r.status in (Status.PASS, Status.WARN), r.message
    if check == "contract":  # the original's summed loss is a choice, reported as one
        assert r.status == Status.WARN and "summed loss" in r.message


def test_a_sigmoid_applied_twice_is_caught_through_the_whole_output(pixels):
    r = run_check(
        "loss_at_init", lambda: VAE(sigmoid_twice=True), pixels, loss=vae_loss,
        optimizer=adam, pipeline=WHOLE, seed=0,
    )  # fmt: skip
    assert r.status == Status.FAIL, r.message
    assert "above the band" in r.message


class OneTensor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D, D)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(x))


def test_a_single_tensor_output_with_whole_is_one_line(pixels):
    with pytest.raises(ConfigError, match=r"returned one tensor \[\d+, 64\], not a tuple"):
        run_check("loss_at_init", OneTensor, pixels, loss=vae_loss, pipeline=WHOLE)


def test_an_output_index_out_of_range_is_one_line(pixels):
    pipe = Pipeline(loss_takes="whole", output_index=3)
    with pytest.raises(ConfigError, match="output_index=3, but the model returned a tuple of 3"):
        run_check("loss_at_init", VAE, pixels, loss=vae_loss, pipeline=pipe)


def test_whole_without_a_loss_of_ones_own_is_one_line(pixels):
    with pytest.raises(ConfigError, match="loss_takes=whole gives your own loss"):
        run_check("loss_at_init", VAE, pixels, pipeline=WHOLE)


def test_a_misspelt_setting_is_one_line():
    with pytest.raises(PipelineError, match="use prediction .* or whole"):
        Pipeline(loss_takes="all")


def test_hydra_config_sets_it():
    from omegaconf import OmegaConf

    from trackcheck.config import PipelineConfig

    node = OmegaConf.merge(
        OmegaConf.structured(PipelineConfig), {"loss_takes": "whole", "output_index": 1}
    )
    pipe = Pipeline(**OmegaConf.to_container(node))  # type: ignore[arg-type]
    assert (pipe.loss_takes, pipe.output_index) == ("whole", 1)


class WithAux(nn.Module):
    """A classifier returning a dict: its logits and a scalar auxiliary penalty."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D, 10)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"logits": self.fc(x), "aux": self.fc.weight.pow(2).mean()}


def aux_loss(out: dict[str, Tensor], y: Tensor) -> Tensor:
    return F.cross_entropy(out["logits"], y) + 0.1 * out["aux"]


def test_a_dict_output_gives_the_loss_its_other_keys():
    X, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(X, dtype=torch.float32) / 16, torch.tensor(labels)
    data = from_datasets(
        TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:]), "multiclass", 10
    )
    ctx = Context(WithAux, data, adam, pipeline=Pipeline(loss=aux_loss, loss_takes="whole"))
    model = ctx.new_model()
    xb, yb = ctx.head("train", 8)
    out = ctx.forward(model, xb)
    assert out.shape == (8, 10)
    aux = model(xb)["aux"]
    # the scalar penalty is not split into examples: each example's loss carries all of it
    expected = F.cross_entropy(out, yb, reduction="none") + 0.1 * aux
    assert torch.allclose(ctx.per_example_loss(out, yb), expected, rtol=1e-5)
    assert torch.allclose(
        ctx.loss(constant_output(ctx, out), yb), torch.log(torch.tensor(10.0)) + 0.1 * aux.detach()
    )


def test_a_whole_output_loss_given_the_prediction_is_told_how_to_say_so(pixels):
    r = run_check("contract", VAE, pixels, loss=vae_loss, optimizer=adam, seed=0)
    assert r.status == Status.FAIL
    assert "set pipeline.loss_takes=whole" in r.message
