"""batch_content: the batches hold distinct examples; the eval loader each example once."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from conftest import blobs, run_check
from torch import nn
from torch.utils.data import DataLoader, Sampler, default_collate

from trackcheck import DataSpec
from trackcheck.core import Status


def model() -> nn.Module:
    return nn.Linear(8, 4)  # the check reads the data path only


def check(data: DataSpec) -> Any:
    return run_check("batch_content", model, data)


def test_clean_loaders_pass() -> None:
    r = check(blobs())
    assert r.status == Status.PASS, r.message
    assert r.value == 1.0
    assert r.metrics["eval_rows"] == r.metrics["eval_distinct"] == 128


def test_dataset_with_genuine_duplicates_passes() -> None:
    # every input twice in the training set: batches repeat examples as often as the
    # sampler's own items do, which is the data, not a bug
    data = blobs(n=256)
    x, y = data.train.tensors  # type: ignore[attr-defined]
    twice = torch.utils.data.TensorDataset(torch.cat([x, x]), torch.cat([y, y]))
    r = check(dataclasses.replace(data, train=twice))
    assert r.status == Status.PASS, r.message
    assert r.metrics["train_within_duplicates"] > 0  # the data's own repeats were seen


def test_collate_that_repeats_the_first_item_fails() -> None:
    def first_repeated(items: list[Any]) -> Any:
        return default_collate([items[0]] * len(items))

    r = check(dataclasses.replace(blobs(), collate_fn=first_repeated))
    assert r.status == Status.FAIL, r.message
    assert "within batches" in r.message and "collate_fn" in r.message
    assert r.value == 1 / 32  # one distinct example per batch of 32


class IndexZero(Sampler[int]):
    """Planted bug: a sampler whose __iter__ yields 0 for every draw."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter([0] * self.n)

    def __len__(self) -> int:
        return self.n


def test_sampler_that_always_returns_index_0_fails() -> None:
    data = blobs()

    def loader(generator: Any = None, batch_size: int = 32) -> DataLoader[Any]:
        return DataLoader(data.train, batch_size=batch_size, sampler=IndexZero(len(data.train)))

    r = check(dataclasses.replace(data, train_loader_fn=loader))
    assert r.status == Status.FAIL, r.message
    assert "returned index 0 for all 256 draws" in r.message


def test_loader_that_yields_one_batch_again_fails() -> None:
    # a classic: the batch fetched once outside the loop, yielded every step
    data = blobs()

    def loader(generator: Any = None, batch_size: int = 32) -> list[Any]:
        first = next(iter(DataLoader(data.train, batch_size, shuffle=True, generator=generator)))
        return [first] * 10

    r = check(dataclasses.replace(data, train_loader_fn=loader))
    assert r.status == Status.FAIL, r.message
    assert "over 256 rows" in r.message and "same batches again" in r.message


def test_eval_loader_with_drop_last_fails() -> None:
    data = blobs()  # 128 test examples in batches of 48: the last 32 dropped

    def loader(batch_size: int = 32) -> DataLoader[Any]:
        return DataLoader(data.test, batch_size=48, drop_last=True)

    r = check(dataclasses.replace(data, test_loader_fn=loader))
    assert r.status == Status.FAIL, r.message
    assert "yields 96 rows for 128 test examples (-32)" in r.message


def test_eval_loader_that_repeats_items_fails() -> None:
    # the count is right, but the first 10 items come twice and the last 10 never
    data = blobs()
    order = list(range(118)) + list(range(10))

    def loader(batch_size: int = 32) -> DataLoader[Any]:
        return DataLoader(data.test, batch_size=batch_size, sampler=order)

    r = check(dataclasses.replace(data, test_loader_fn=loader))
    assert r.status == Status.FAIL, r.message
    assert "repeats 10 examples where the test set's own items hold 0" in r.message


def test_dict_batches_with_padding_pass() -> None:
    from helpers.hf_models import lm_dicts

    r = check(lm_dicts(max_chars=8000))
    assert r.status == Status.PASS, r.message
