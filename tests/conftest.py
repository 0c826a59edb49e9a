"""Shared test helpers: tiny data and models, a one-check runner. CPU only, no network."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

# real trackers' fixtures (an MLflow store and server, W&B offline) for every test file
pytest_plugins = ["helpers.trackers"]

os.environ.setdefault("MPLBACKEND", "Agg")
# the shipped datasets' split arrays are cached per test session, never in the user's ~/.cache
os.environ.setdefault("TRACKCHECK_CACHE_DIR", tempfile.mkdtemp(prefix="trackcheck-cache-"))
torch.set_num_threads(2)

from trackcheck import CheckResult, DataSpec, run  # noqa: E402
from trackcheck.context import Context  # noqa: E402
from trackcheck.core import SkipCheck, Status  # noqa: E402
from trackcheck.data import breast_cancer, diabetes, digits, text_corpus  # noqa: E402
from trackcheck.registry import get_check  # noqa: E402
from trackcheck.tasks import make_task  # noqa: E402


def run_check(
    name: str,
    model: Callable[[], nn.Module],
    data: DataSpec,
    params: dict[str, Any] | None = None,
    **kwargs: Any,
) -> CheckResult:
    """Run one check through the public API (no tracker, no progress) and return its result."""
    report = run(model, data, checks=[name], params={name: params or {}}, progress=False, **kwargs)
    return report[name]


def data_check(name: str, data: DataSpec, **params: Any) -> CheckResult:
    """A data-only check called directly on ``data`` (no stage, no figure drawn); a skip
    comes back as a SKIP result. The model is never built."""
    from trackcheck.models import MLP

    ctx = Context(model_factory=lambda: MLP([1], 1), data=data, optimizer_factory=torch.optim.Adam)
    spec = get_check(name)
    try:
        return spec(ctx, spec.params(**params))
    except SkipCheck as e:
        return CheckResult(name, Status.SKIP, str(e))


def prior_bias(data: DataSpec) -> list[float]:
    return data.prior_bias()


def blobs(
    task: str = "multiclass",
    n: int = 512,
    d: int = 8,
    c: int = 4,
    seed: int = 0,
    y_shift: float = 0.0,
) -> DataSpec:
    """Learnable tabular data for any task: Gaussian inputs, labels from a fixed linear map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, c, generator=g)
    if task == "multiclass":
        y: torch.Tensor = (x @ w).argmax(1)
    elif task == "binary":
        y = ((x @ w[:, 0]) > 0).float()
    else:
        y = (x @ w[:, 0]) + y_shift
    cut = n * 3 // 4
    return DataSpec(
        train=TensorDataset(x[:cut], y[:cut]),
        test=TensorDataset(x[cut:], y[cut:]),
        task=make_task(task, c if task == "multiclass" else 1),
        kind="tabular",
        batch_size=32,
    )


@pytest.fixture(scope="session")
def digits_data() -> DataSpec:
    return digits()


@pytest.fixture(scope="session")
def cancer_data() -> DataSpec:
    return breast_cancer()


@pytest.fixture(scope="session")
def diabetes_data() -> DataSpec:
    return diabetes()


@pytest.fixture(scope="session")
def text_data() -> DataSpec:
    return text_corpus(seq_len=32, max_chars=40_000)


def tracked_stage(
    tracker: Any, out: Any, *, fail: bool = False, config: dict[str, Any] | None = None
) -> Any:
    """A real two-check stage for the tracker tests, about a second on CPU.

    loss_at_init (scalars) and overfit_batch (a loss series, an overlay figure) on blobs with
    a small MLP. ``fail=True`` plants softmax before the cross-entropy: the outputs cannot
    leave [0, 1], overfit_batch fails on it within 20 steps, and the gate fails.
    """
    from helpers.models import SoftmaxBeforeCE

    from trackcheck.models import MLP

    model = SoftmaxBeforeCE if fail else MLP
    return run(
        lambda: model([8], 4, width=32),
        blobs(),
        checks=["loss_at_init", "overfit_batch"],
        params={"overfit_batch": {"max_steps": 20}} if fail else None,
        optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-2),
        tracker=tracker,
        output_dir=out,
        config=config,
        run_name="sanity-test",
        progress=False,
    )


def flat(pairs: Any) -> list[float]:
    """[(step, value), ...] -> [step, value, ...]: pytest.approx compares flat sequences only."""
    return [float(v) for pair in pairs for v in pair]


def interrupted_stage(tracker: Any, out: Any) -> None:
    """A stage whose first check is hit by Ctrl-C while it builds its model; re-raises it."""

    def interrupted_model() -> nn.Module:
        raise KeyboardInterrupt

    run(
        interrupted_model,
        blobs(),
        checks=["loss_at_init"],
        tracker=tracker,
        output_dir=out,
        progress=False,
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--corpus",
        action="store_true",
        help="also run the full false-alarm corpus over 3 seeds (about 37 min on 2 cores)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--corpus"):
        return
    skip = pytest.mark.skip(reason="the full corpus runs with --corpus (about 37 min)")
    for item in items:
        if item.get_closest_marker("corpus") is not None:
            item.add_marker(skip)
