import torch
from conftest import blobs, prior_bias, run_check
from torch.utils.data import TensorDataset

from trackcheck import DataSpec, make_task
from trackcheck.core import Status
from trackcheck.models import MLP


def imbalanced(ratio: int = 10, n: int = 1100) -> DataSpec:
    """Binary data with 1 positive for every ``ratio`` negatives."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (torch.arange(n) % (ratio + 1) == 0).float()
    x[y == 1] += 1.0
    return DataSpec(TensorDataset(x, y), TensorDataset(x[:100], y[:100]), make_task("binary"))


def test_fails_on_bias_zero_for_1_to_10_imbalance():
    data = imbalanced()
    r = run_check("init_bias", lambda: MLP([8], 1, out_bias=0.0), data)
    assert r.status == Status.FAIL
    assert r.value > 1.0  # KL(0.09 || 0.5) / H(0.09) = 1.27: the bias costs more than the rest
    assert "-2.3" in r.message  # logit(1/11) = -2.30, the fix


def test_passes_when_bias_carries_the_prior():
    data = imbalanced()
    r = run_check("init_bias", lambda: MLP([8], 1, out_bias=prior_bias(data)), data)
    assert r.status == Status.PASS, r.message


def test_fails_on_regression_mean_50_with_bias_zero():
    data = blobs("regression", y_shift=50.0)
    r = run_check("init_bias", lambda: MLP([8], 1, out_bias=0.0), data)
    assert r.status == Status.FAIL
    assert (
        abs(r.metrics["target_mean"] - 50) < 1 and "set the final layer's bias to [50" in r.message
    )


def test_regression_passes_with_bias_at_mean(diabetes_data):
    r = run_check(
        "init_bias", lambda: MLP([10], 1, out_bias=prior_bias(diabetes_data)), diabetes_data
    )
    assert r.status == Status.PASS, r.message
    assert abs(r.metrics["target_mean"] - 152) < 5


def test_balanced_multiclass_passes_with_default_init(digits_data):
    r = run_check("init_bias", lambda: MLP([1, 8, 8], 10), digits_data)
    assert r.status == Status.PASS, r.message
