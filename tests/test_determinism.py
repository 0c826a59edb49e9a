import time

import numpy as np
import torch
from conftest import blobs, run_check
from torch.utils.data import Dataset

from trackcheck import DataSpec
from trackcheck.core import Status
from trackcheck.models import MLP, ResNet


class UnseededNoise(MLP):
    """Planted bug: an unseeded numpy generator adds noise in forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        noise = np.random.default_rng().normal(0, 0.1, out.shape)  # no seed: differs per run
        return out + torch.as_tensor(noise, dtype=out.dtype)


class UnseededInit(MLP):
    """Planted bug: the head's init drawn from an unseeded numpy generator."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        w = np.random.default_rng().normal(0, 0.1, tuple(self.head.weight.shape))
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(w))


class TimeNoiseDataset(Dataset):
    """Planted bug: noise seeded from the clock on every access."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        x, y = self.base[i]
        g = torch.Generator().manual_seed(time.perf_counter_ns())
        return x + 0.01 * torch.randn(x.shape, generator=g), y


class NondeterministicKernel(MLP):
    """Stands in for a kernel whose float sums reorder run to run unless
    torch.use_deterministic_algorithms(True) picks its deterministic variant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if not torch.are_deterministic_algorithms_enabled():
            out = out + torch.as_tensor(
                np.random.default_rng().normal(0, 1e-3, out.shape), dtype=out.dtype
            )
        return out


class NoDeterministicKernel(MLP):
    """Uses put_, which has no deterministic CPU kernel, and reorders sums by ``noise``."""

    def __init__(self, *args, noise: float = 0.0, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        idx = torch.tensor([0])
        out.detach().clone().put_(idx, out.detach().take(idx))  # raises in deterministic mode
        jitter = np.random.default_rng().normal(0, self.noise, out.shape)
        return out + torch.as_tensor(jitter, dtype=out.dtype)


def test_passes_bitwise_on_a_clean_model_and_another_seed_differs():
    r = run_check("determinism", lambda: MLP([8], 4, width=16), blobs())
    assert r.status == Status.PASS, r.message
    assert r.metrics["bitwise_equal"] == 1.0
    assert r.metrics["max_abs_diff"] == 0.0
    assert r.metrics["other_seed_tensors_differing"] == 6  # every weight and bias
    assert r.metrics["needed_deterministic_algorithms"] == 0.0
    assert r.series["loss_run1"] == r.series["loss_run2"] != r.series["loss_other_seed"]
    assert "losses" in r.figures


def test_passes_with_batchnorm_buffers(digits_data):
    r = run_check(
        "determinism", lambda: ResNet([1, 8, 8], 10, width=4, stages=1), digits_data, {"steps": 3}
    )
    assert r.status == Status.PASS, r.message


def test_fails_on_unseeded_numpy_noise_in_forward():
    r = run_check("determinism", lambda: UnseededNoise([8], 4), blobs(), {"steps": 3})
    assert r.status == Status.FAIL
    assert "losses differ from step 0" in r.message
    assert "still differ under torch.use_deterministic_algorithms(True)" in r.message


def test_fails_on_unseeded_init():
    r = run_check("determinism", lambda: UnseededInit([8], 4), blobs(), {"steps": 3})
    assert r.status == Status.FAIL
    assert "start from different weights" in r.message and "head.weight" in r.message


def test_fails_on_time_based_noise_in_the_data():
    d = blobs()
    noisy = DataSpec(train=TimeNoiseDataset(d.train), test=d.test, task=d.task, batch_size=32)
    r = run_check("determinism", lambda: MLP([8], 4), noisy, {"steps": 3})
    assert r.status == Status.FAIL
    assert "batches differ from step 0" in r.message
    assert r.metrics["first_diff_batch"] == 0


def test_warns_when_the_seed_does_not_reach_the_init():
    # a model instance is deep-copied for every check: both seeds start from one init
    r = run_check("determinism", MLP([8], 4), blobs())
    assert r.status == Status.WARN
    assert "factory ignores the seed" in r.message


def test_warns_when_only_deterministic_algorithms_make_runs_identical():
    r = run_check("determinism", lambda: NondeterministicKernel([8], 4), blobs())
    assert r.status == Status.WARN, r.message
    assert r.metrics["needed_deterministic_algorithms"] == 1.0
    assert "set it in training" in r.message
    assert not torch.are_deterministic_algorithms_enabled()  # the global mode is restored


def test_names_the_op_without_a_deterministic_kernel_and_applies_the_tolerance():
    tiny = run_check("determinism", lambda: NoDeterministicKernel([8], 4, noise=1e-8), blobs())
    assert tiny.status == Status.WARN, tiny.message
    assert "refuses put_" in tiny.message and "within tolerance" in tiny.message
    large = run_check("determinism", lambda: NoDeterministicKernel([8], 4, noise=1e-2), blobs())
    assert large.status == Status.FAIL
    assert "put_ has no deterministic kernel" in large.message
    assert not torch.are_deterministic_algorithms_enabled()


def test_run_one_is_the_shared_run_and_matches_a_run_alone(digits_data):
    # run 1 is read off the stage's shared run, with the other checks' observers working
    # between its steps (held-out forwards, BatchNorm recalibration, a blanked model
    # training beside it); run 2 trains alone: they must still be bit-identical
    from trackcheck import run

    checks = ["determinism", "prediction_dynamics", "input_independent", "loss_decreases"]
    report = run(
        lambda: ResNet([1, 8, 8], 10, width=4, stages=1),
        digits_data,
        checks=checks,
        progress=False,
    )
    r = report["determinism"]
    assert r.status == Status.PASS, r.message
    assert r.series["loss_run1"] == r.series["loss_run2"]
    steps = len(r.series["loss_run1"])
    assert (r.n_forward, r.n_backward) == (2 * steps, 2 * steps)  # runs 2 and 3 only
