from conftest import blobs, prior_bias, run_check
from models import scaled_head

from trackcheck.core import Status
from trackcheck.models import MLP, ResNet


def test_passes_resnet_on_digits(digits_data):
    r = run_check("loss_at_init", lambda: ResNet([1, 8, 8], 10), digits_data)
    assert r.status == Status.PASS, r.message
    assert abs(r.metrics["expected_uniform"] - 2.3026) < 1e-3  # ln(10)


def test_fails_when_resnet_head_is_far_too_large(digits_data):
    # the ResNet's head starts at std 0.01, so x10 is still a sane init; x100 is the
    # equivalent of a default-initialised head scaled x10
    r = run_check("loss_at_init", scaled_head(lambda: ResNet([1, 8, 8], 10), 100.0), digits_data)
    assert r.status == Status.FAIL
    assert r.metrics["loss"] > r.metrics["band_hi"]
    assert "above the band" in r.message


def test_fails_when_mlp_final_layer_scaled_x10(digits_data):
    r = run_check("loss_at_init", scaled_head(lambda: MLP([1, 8, 8], 10)), digits_data)
    assert r.status == Status.FAIL, r.message


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


def test_band_is_two_sided_in_message(digits_data):
    r = run_check("loss_at_init", lambda: ResNet([1, 8, 8], 10), digits_data)
    assert r.metrics["band_lo"] < r.metrics["expected"] < r.metrics["band_hi"]
    assert r.threshold.startswith("[")
