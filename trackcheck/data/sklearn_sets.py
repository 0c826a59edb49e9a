"""Datasets that ship with scikit-learn: nothing to download, the same on every machine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from trackcheck.data._cache import Arrays, cached
from trackcheck.data.spec import DataSpec
from trackcheck.tasks import make_task


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, stratify: bool) -> Arrays:
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y if stratify else None
    )
    return {"xtr": xtr, "xte": xte, "ytr": ytr, "yte": yte}


def _sklearn_split(name: str, test_fraction: float, seed: int) -> Arrays:
    """scikit-learn's bundled dataset ``name``, split; cached on disk (data/_cache.py says
    why). Digits keep their images ([N, 1, 8, 8]); the tables their column and class names."""

    def build() -> Arrays:
        from sklearn import datasets

        d = getattr(datasets, f"load_{name}")()
        if name == "digits":  # [N, 1, 8, 8], pixel values 0..16
            return _split(d.images.astype(np.float32)[:, None], d.target, test_fraction, seed, True)
        y = d.target.astype(np.float32)
        out = _split(d.data, y, test_fraction, seed, stratify=name != "diabetes")
        out["feature_names"] = np.asarray(d.feature_names, dtype=str)
        out["class_names"] = np.asarray(d.get("target_names", []), dtype=str)
        return out

    return cached(name, (test_fraction, seed), __file__, build)


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
    a = _sklearn_split("digits", test_fraction, split_seed)
    _check_declared("digits", num_outputs, 10, "num_outputs")
    _check_declared("digits", input_shape, a["xtr"].shape[1:], "input_shape")
    mean, std = a["xtr"].mean(), a["xtr"].std()  # train statistics only: no test leakage
    xtr, xte = (a["xtr"] - mean) / std, (a["xte"] - mean) / std
    return DataSpec(
        train=TensorDataset(torch.from_numpy(xtr), torch.from_numpy(a["ytr"]).long()),
        test=TensorDataset(torch.from_numpy(xte), torch.from_numpy(a["yte"]).long()),
        task=make_task(task, 10),
        kind="image",
        batch_size=batch_size,
        class_names=[str(i) for i in range(10)],
        info={"input_shape": [1, 8, 8], "pixel_mean": float(mean), "pixel_std": float(std)},
    )


def _tabular(
    name: str,
    a: Arrays,
    task: str,
    batch_size: int,
    feature_names: list[str],
    class_names: list[str] | None,
) -> DataSpec:
    """Split table arrays (``_split``'s keys), standardised with the training split's
    per-feature statistics."""
    mean, std = a["xtr"].mean(0), a["xtr"].std(0) + 1e-8
    xtr, xte = (a["xtr"] - mean) / std, (a["xte"] - mean) / std
    ydtype = torch.float32
    return DataSpec(
        train=TensorDataset(
            torch.tensor(xtr, dtype=torch.float32), torch.tensor(a["ytr"], dtype=ydtype)
        ),
        test=TensorDataset(
            torch.tensor(xte, dtype=torch.float32), torch.tensor(a["yte"], dtype=ydtype)
        ),
        task=make_task(task, 1),
        kind="tabular",
        batch_size=batch_size,
        feature_names=feature_names,
        class_names=class_names,
        info={"input_shape": [xtr.shape[1]], "name": name},
    )


def breast_cancer(
    batch_size: int = 64,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    num_outputs: int | None = 1,
    input_shape: Sequence[int] | None = (30,),
) -> DataSpec:
    """Binary tumour classification from 30 features; imbalanced (212 malignant : 357 benign)."""
    a = _sklearn_split("breast_cancer", test_fraction, split_seed)
    _check_declared("breast_cancer", input_shape, a["xtr"].shape[1:], "input_shape")
    names = a["feature_names"].tolist(), a["class_names"].tolist()
    return _tabular("breast_cancer", a, "binary", batch_size, *names)


def diabetes(
    batch_size: int = 64,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    num_outputs: int | None = 1,
    input_shape: Sequence[int] | None = (10,),
) -> DataSpec:
    """Regression of disease progression from 10 features; targets are raw (mean about 152)."""
    a = _sklearn_split("diabetes", test_fraction, split_seed)
    _check_declared("diabetes", input_shape, a["xtr"].shape[1:], "input_shape")
    return _tabular("diabetes", a, "regression", batch_size, a["feature_names"].tolist(), None)


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

    def build() -> Arrays:
        g = np.random.default_rng(seed)
        x = g.standard_normal((n, num_features)).astype(np.float32)
        w = g.standard_normal((num_features, num_outputs)).astype(np.float32)
        return _split(x, (x @ w).argmax(1), test_fraction, seed, stratify=True)

    _check_declared("synthetic", input_shape, [num_features], "input_shape")
    a = cached("synthetic", (n, num_features, num_outputs, test_fraction, seed), __file__, build)
    features = [f"x{i}" for i in range(num_features)]
    spec = _tabular(
        "synthetic", a, "multiclass", batch_size, features, [str(i) for i in range(num_outputs)]
    )
    spec.task = make_task("multiclass", num_outputs)
    spec.train.tensors = (spec.train.tensors[0], spec.train.tensors[1].long())  # type: ignore[attr-defined]
    spec.test.tensors = (spec.test.tensors[0], spec.test.tensors[1].long())  # type: ignore[attr-defined]
    return spec
