import math

import pytest
import torch
from conftest import blobs, prior_bias, run_check
from helpers.models import scaled_head
from torch import nn

import trackcheck
from trackcheck.core import Status
from trackcheck.losses import per_example
from trackcheck.models import MLP, ResNet

OLD_BAND_TOP = 1.1 * math.log(10)  # the fixed +-10% band this check used to apply: 2.533


def test_passes_resnet_on_digits(digits_data):
    r = run_check("loss_at_init", lambda: ResNet([1, 8, 8], 10), digits_data)
    assert r.status == Status.PASS, r.message
    assert abs(r.metrics["expected_uniform"] - 2.3026) < 1e-3  # ln(10)


def test_fails_when_resnet_head_is_far_too_large(digits_data):
    # the ResNet's head starts at std 0.01, so x10 is still a sane init; x100 is the
    # equivalent of a default-initialised head scaled x10 (logit std 3.2 at seed 0)
    r = run_check("loss_at_init", scaled_head(lambda: ResNet([1, 8, 8], 10), 100.0), digits_data)
    assert r.status == Status.FAIL
    assert r.metrics["loss"] > r.metrics["band_hi"]
    assert "above the band" in r.message


def test_fails_when_mlp_final_layer_scaled_x10(digits_data):
    # x10 gives logits of std 1.34 at seed 0, beyond the 1.0 the band admits
    r = run_check("loss_at_init", scaled_head(lambda: MLP([1, 8, 8], 10)), digits_data)
    assert r.status == Status.FAIL, r.message
    assert r.metrics["logit_std"] > r.metrics["max_logit_std"]
    assert f"logits at init have std {r.metrics['logit_std']:.3g}" in r.message
    assert "a default-init head gives 0.6-0.9" in r.message


def _hf_resnet() -> nn.Module:
    """Hugging Face's ResNet with its default init: a default nn.Linear classifier on
    BatchNorm'd features, logits of std 0.50-0.61 on digits (torchvision's resnet18 gives
    0.61-0.86 the same way)."""
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(
        num_channels=1,
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        num_labels=10,
    )
    return ResNetForImageClassification(cfg)


def test_default_init_head_passes_on_every_seed(digits_data):
    # the false alarm: the fixed +-10% band failed this model on seeds 3 and 4 (2.55, 2.60)
    results = [run_check("loss_at_init", _hf_resnet, digits_data, seed=seed) for seed in range(5)]
    assert all(r.status == Status.PASS for r in results), [r.message for r in results]
    assert max(r.metrics["loss"] for r in results) > OLD_BAND_TOP
    assert all(0.3 < r.metrics["logit_std"] < 1.0 for r in results)


def test_band_top_is_the_loss_of_unit_std_logits(digits_data):
    # softmax CE with logits of std s costs about s^2 / 2 over ln C: 0.5 at s = 1
    r = run_check("loss_at_init", lambda: MLP([1, 8, 8], 10), digits_data)
    excess = r.metrics["expected_noisy"] - r.metrics["expected_uniform"]
    assert 0.35 < excess < 0.55


def test_expects_label_entropy_when_bias_carries_prior(cancer_data):
    r = run_check(
        "loss_at_init", lambda: MLP([30], 1, out_bias=prior_bias(cancer_data)), cancer_data
    )
    assert r.status == Status.PASS, r.message
    # H(212/569) = 0.660 nats, below ln 2 = 0.693
    assert abs(r.metrics["expected_prior"] - 0.6604) < 2e-3
    assert r.metrics["expected"] == r.metrics["expected_prior"]


def test_regression_expects_target_variance_with_bias_at_mean():
    data = blobs("regression", y_shift=50.0)
    r = run_check("loss_at_init", lambda: MLP([8], 1, out_bias=prior_bias(data)), data)
    assert r.status == Status.PASS, r.message
    y = data.targets()
    assert abs(r.metrics["expected_prior"] - float(y.var(unbiased=False))) < 1e-3


def test_expected_values_come_from_the_users_loss(digits_data):
    # label smoothing 0.1: a zero output still costs ln 10, but the prior in the bias costs
    # the smoothed cross-entropy of the prior, not H(labels)
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    bias = prior_bias(digits_data)
    r = run_check("loss_at_init", lambda: MLP([1, 8, 8], 10, out_bias=bias), digits_data, loss=loss)
    assert r.status == Status.PASS, r.message
    assert abs(r.metrics["expected_uniform"] - math.log(10)) < 1e-4
    y = digits_data.targets()[: int(r.metrics["n_examples"])]
    # the examples the check drew are a shuffle of the training set: compare on all of them
    full = float(loss(torch.tensor(bias).expand(len(y), 10), y))
    assert r.metrics["expected_prior"] == pytest.approx(full, abs=0.02)


def test_huber_regression_expects_the_huber_loss_of_the_mean():
    data = blobs("regression", y_shift=50.0)
    loss = nn.HuberLoss(delta=1.0)
    r = run_check("loss_at_init", lambda: MLP([8], 1, out_bias=prior_bias(data)), data, loss=loss)
    assert r.status == Status.PASS, r.message
    y = data.targets()
    huber = float(loss(torch.full_like(y, float(y.mean())), y))
    assert r.metrics["expected_prior"] == pytest.approx(huber, rel=1e-4)
    assert r.metrics["expected_prior"] < float(y.var())  # Huber grows linearly past delta


def test_too_large_head_fails_under_the_users_loss(digits_data):
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)
    r = run_check(
        "loss_at_init", scaled_head(lambda: MLP([1, 8, 8], 10), 30.0), digits_data, loss=loss
    )
    assert r.status == Status.FAIL
    assert "above the band" in r.message


def test_band_is_two_sided_in_message(digits_data):
    r = run_check("loss_at_init", lambda: ResNet([1, 8, 8], 10), digits_data)
    assert r.metrics["band_lo"] < r.metrics["expected"] < r.metrics["band_hi"]
    assert r.threshold.startswith("[")


# --- a loss that cannot take a batch of one: pytorch/examples' siamese network -------------


class SigmoidColumn(nn.Module):
    """A binary head returning [B, 1] probabilities, as the siamese network's fc + sigmoid."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        with torch.no_grad():
            self.net[2].weight.mul_(scale)

    def forward(self, x):
        return torch.sigmoid(self.net(x))


def squeezed_bce(outputs, targets):
    # siamese_network/main.py: criterion(outputs.squeeze(), targets); a batch of one
    # squeezes to a 0-d output against a [1] target, which BCELoss refuses
    return nn.BCELoss()(outputs.squeeze(), targets)


def squeezed_summed_bce(outputs, targets):
    return nn.BCELoss(reduction="sum")(outputs.squeeze(), targets)


@pytest.mark.parametrize("loss", [squeezed_bce, squeezed_summed_bce])
def test_the_per_example_loss_of_a_squeezing_loss_is_each_examples_own(loss):
    out = torch.tensor([[0.2], [0.7], [0.9]])
    y = torch.tensor([0.0, 1.0, 0.0])
    expected = nn.BCELoss(reduction="none")(out.squeeze(-1), y)
    assert torch.allclose(per_example(loss, out, y), expected, atol=1e-6)


def test_a_loss_that_squeezes_its_output_passes_loss_at_init():
    # before: ERROR "Using a target size ([1]) that is different to the input size ([])"
    r = run_check("loss_at_init", SigmoidColumn, blobs("binary"), loss=squeezed_bce)
    assert r.status == Status.PASS, r.message


def test_a_too_large_head_still_fails_under_a_squeezing_loss():
    r = run_check("loss_at_init", lambda: SigmoidColumn(30.0), blobs("binary"), loss=squeezed_bce)
    assert r.status == Status.FAIL and "above the band" in r.message, r.message


def test_a_loss_that_fails_on_any_batch_still_says_why():
    def broken(outputs, targets):
        return nn.BCELoss()(outputs, targets)  # [B, 1] outputs vs [B] targets: never valid

    with pytest.raises(ValueError, match="target size"):
        per_example(broken, torch.full((3, 1), 0.5), torch.zeros(3))


# --- unnormalised inputs: the PyTorch tutorial's polynomial fit ------------------------------


def _poly(standardise: bool = False):
    """sin(x) on [-pi, pi] from the features (x, x^2, x^3), as "Learning PyTorch with
    Examples" fits it with Linear(3, 1): features up to 31, rms about 7."""
    from torch.utils.data import TensorDataset

    from trackcheck.data.spec import from_datasets

    x = torch.linspace(-math.pi, math.pi, 1200)
    xx = x.unsqueeze(-1).pow(torch.tensor([1, 2, 3]))  # [N, 3]
    if standardise:
        xx = (xx - xx.mean(0)) / xx.std(0)
    perm = torch.randperm(1200, generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1000], perm[1000:]
    y = torch.sin(x)
    return from_datasets(
        TensorDataset(xx[tr], y[tr]), TensorDataset(xx[te], y[te]), "regression", 1
    )


def _linear():
    return nn.Sequential(nn.Linear(3, 1), nn.Flatten(0, 1))


def test_outputs_lifted_by_unnormalised_inputs_warn_naming_the_input_scale():
    # before: FAIL "scale the final layer's weights down": the head is a default Linear,
    # the inputs' scale (x^3 up to 31) lifts its outputs; the program trains
    results = [run_check("loss_at_init", _linear, _poly(), seed=s) for s in range(3)]
    lifted = [r for r in results if r.metrics["loss_shuffled"] > r.metrics["band_hi"]]
    assert lifted, [r.message for r in results]  # the band is exceeded on some seed
    for r in lifted:
        assert r.status == Status.WARN, r.message
        assert "the inputs are not standardised" in r.message and "rms" in r.message


def test_the_same_model_on_standardised_inputs_passes():
    r = run_check("loss_at_init", _linear, _poly(standardise=True))
    assert r.status == Status.PASS, r.message


# --- an offset the init draws: pytorch/examples' siamese network ------------------------------


def test_an_offset_that_a_change_of_seed_moves_across_the_band_passes():
    # the siamese network's xavier head on pooled ReLU features shares an offset whose size
    # is the init's draw: its seed-1 init alone is above the band (0.868 vs 0.842; seeds 0
    # and 2 are inside), so the verdict is judged over several inits and one inside passes
    from corpus import kwargs

    r = trackcheck.run(**kwargs("pt_siamese"), checks=["loss_at_init"], seed=1, progress=False)
    res = r["loss_at_init"]
    assert res.metrics["loss_shuffled"] > res.metrics["band_hi"]  # this init alone: above
    assert res.status == Status.PASS, res.message
    assert "inits above the band" in res.message and "a change of seed moves it" in res.message
    assert res.metrics["inits"] == 2  # the next seed's init is inside: no further init drawn


@pytest.mark.parametrize("bias", [2.0, 3.0])
def test_a_bias_offset_far_from_the_prior_fails_on_every_init(bias):
    # planted: the output bias set to `bias` on a balanced binary task (prior logit ~0); the
    # spread stays a default head's, the offset is the same on every init
    r = run_check("loss_at_init", lambda: MLP([8], 1, out_bias=bias), blobs("binary"))
    assert r.status == Status.FAIL, r.message
    assert r.metrics["logit_std"] <= r.metrics["max_logit_std"]
    assert "5 of 5 inits above the band" in r.message
    assert "check the final layer's bias" in r.message
