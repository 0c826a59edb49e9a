"""Datasets that ship with scikit-learn: nothing to download, the same on every machine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from trackcheck.data.spec import DataSpec
from trackcheck.tasks import make_task


def _split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    return tuple(
        train_test_split(
            x, y, test_size=test_fraction, random_state=seed, stratify=y if stratify else None
        )
    )


def _check_declared(name: str, declared: Any, actual: Any, key: str) -> None:
    # model configs interpolate these values (``${data.num_outputs}``), so they must be true
    if declared is not None and list(np.atleast_1d(declared)) != list(np.atleast_1d(actual)):
        raise ValueError(f"data {name}: {key}={declared} in the config, but the data has {actual}")


def digits(
    batch_size: int = 64,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    num_outputs: int | None = 10,
    input_shape: Sequence[int] | None = (1, 8, 8),
    task: str = "multiclass",
) -> DataSpec:
    """8x8 grey images of handwritten digits, 10 classes (1797 images), standardised."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None]  # [N, 1, 8, 8], pixel values 0..16
    _check_declared("digits", num_outputs, 10, "num_outputs")
    _check_declared("digits", input_shape, x.shape[1:], "input_shape")
    xtr, xte, ytr, yte = _split(x, d.target, test_fraction, split_seed, stratify=True)
    mean, std = xtr.mean(), xtr.std()  # train statistics only: no test leakage
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    return DataSpec(
        train=TensorDataset(torch.from_numpy(xtr), torch.from_numpy(ytr).long()),
        test=TensorDataset(torch.from_numpy(xte), torch.from_numpy(yte).long()),
        task=make_task(task, 10),
        kind="image",
        batch_size=batch_size,
        class_names=[str(i) for i in range(10)],
        info={"input_shape": [1, 8, 8], "pixel_mean": float(mean), "pixel_std": float(std)},
    )


def _tabular(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    task: str,
    batch_size: int,
    test_fraction: float,
    split_seed: int,
    feature_names: list[str],
    class_names: list[str] | None,
) -> DataSpec:
    classification = task != "regression"
    xtr, xte, ytr, yte = _split(x, y, test_fraction, split_seed, stratify=classification)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-8
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    ydtype = torch.float32
    return DataSpec(
        train=TensorDataset(
            torch.tensor(xtr, dtype=torch.float32), torch.tensor(ytr, dtype=ydtype)
        ),
        test=TensorDataset(torch.tensor(xte, dtype=torch.float32), torch.tensor(yte, dtype=ydtype)),
        task=make_task(task, 1),
        kind="tabular",
        batch_size=batch_size,
        feature_names=feature_names,
        class_names=class_names,
        info={"input_shape": [x.shape[1]], "name": name},
    )


def breast_cancer(
    batch_size: int = 64,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    num_outputs: int | None = 1,
    input_shape: Sequence[int] | None = (30,),
) -> DataSpec:
    """Binary tumour classification from 30 features; imbalanced (212 malignant : 357 benign)."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    _check_declared("breast_cancer", input_shape, d.data.shape[1:], "input_shape")
    return _tabular(
        "breast_cancer",
        d.data,
        d.target.astype(np.float32),
        "binary",
        batch_size,
        test_fraction,
        split_seed,
        list(d.feature_names),
        list(d.target_names),
    )


def diabetes(
    batch_size: int = 64,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    num_outputs: int | None = 1,
    input_shape: Sequence[int] | None = (10,),
) -> DataSpec:
    """Regression of disease progression from 10 features; targets are raw (mean about 152)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    _check_declared("diabetes", input_shape, d.data.shape[1:], "input_shape")
    return _tabular(
        "diabetes",
        d.data,
        d.target.astype(np.float32),
        "regression",
        batch_size,
        test_fraction,
        split_seed,
        list(d.feature_names),
        None,
    )


def synthetic(
    n: int = 2048,
    num_features: int = 16,
    num_outputs: int = 4,
    batch_size: int = 64,
    test_fraction: float = 0.25,
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
) -> DataSpec:
    """Gaussian inputs labelled by a fixed random linear map: learnable, balanced, tiny."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, num_features)).astype(np.float32)
    w = g.standard_normal((num_features, num_outputs)).astype(np.float32)
    y = (x @ w).argmax(1)
    _check_declared("synthetic", input_shape, [num_features], "input_shape")
    spec = _tabular(
        "synthetic",
        x,
        y,
        "multiclass",
        batch_size,
        test_fraction,
        seed,
        [f"x{i}" for i in range(num_features)],
        [str(i) for i in range(num_outputs)],
    )
    spec.task = make_task("multiclass", num_outputs)
    spec.train.tensors = (spec.train.tensors[0], spec.train.tensors[1].long())  # type: ignore[attr-defined]
    spec.test.tensors = (spec.test.tensors[0], spec.test.tensors[1].long())  # type: ignore[attr-defined]
    return spec
