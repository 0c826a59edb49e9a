"""leakage: test examples that are training examples, and a target hidden in the inputs."""

from __future__ import annotations

import dataclasses

import helpers.hf_models as H
import pytest
import torch
from conftest import data_check
from torch.utils.data import TensorDataset

from trackcheck import CheckResult, DataSpec, Status, from_datasets, make_task
from trackcheck.data import breast_cancer, diabetes, digits, synthetic, text_corpus


def check(data: DataSpec, **params: object) -> CheckResult:
    return data_check("leakage", data, **params)


@pytest.mark.parametrize(
    "make", [digits, breast_cancer, diabetes, synthetic, H.marker_sequences, H.lm_dicts]
)
def test_shipped_and_third_party_data_pass(make):
    r = check(make())
    assert r.status == Status.PASS, r.message
    assert r.value == 0.0


def test_text_corpus_passes():
    r = check(text_corpus(seq_len=32, max_chars=40_000))
    assert r.status == Status.PASS, r.message


def test_test_split_copied_from_train_fails_and_names_the_indices(digits_data):
    # planted bug: the "test split" is 100 training images, shuffled
    x, y = digits_data.train.tensors
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:100]
    data = dataclasses.replace(digits_data, test=TensorDataset(x[perm], y[perm]))
    r = check(data)
    assert r.status == Status.FAIL, r.message
    assert r.metrics["n_leaked"] == 100 and r.value == 1.0
    assert f"test 0 -> train {int(perm[0])}" in r.message


def test_a_tenth_of_the_test_split_leaked_fails(digits_data):
    x, y = digits_data.train.tensors
    xt, yt = (t.clone() for t in digits_data.test.tensors)
    xt[::10], yt[::10] = x[: len(xt[::10])], y[: len(xt[::10])]  # 36 of 360
    r = check(dataclasses.replace(digits_data, test=TensorDataset(xt, yt)))
    assert r.status == Status.FAIL, r.message
    assert r.metrics["exact_n_leaked"] == 36
    assert "test 10 -> train 1" in r.message


def test_copies_with_float_noise_are_near_copies(cancer_data):
    # the same rows re-normalised in another precision: no exact match, a near one
    x, y = cancer_data.train.tensors
    noisy = x[:60] + 1e-4 * torch.randn(60, x.shape[1], generator=torch.Generator().manual_seed(1))
    xt, yt = cancer_data.test.tensors
    data = dataclasses.replace(
        cancer_data, test=TensorDataset(torch.cat([noisy, xt[60:]]), torch.cat([y[:60], yt[60:]]))
    )
    r = check(data)
    assert r.status == Status.FAIL, r.message
    assert r.metrics["exact_n_leaked"] == 0 and r.metrics["near_n_leaked"] >= 25


def test_genuine_duplicate_rows_split_at_random_pass():
    # every row of the dataset occurs twice, then a random split: the test split holds
    # copies of training rows (~75%), exactly as often as the training split holds copies
    # of its own rows: a property of the dataset, not a leak
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=g)
    x, y = x.repeat(2, 1), (x.sum(1) > 0).float().repeat(2)
    perm = torch.randperm(800, generator=g)
    tr, te = perm[:600], perm[600:]
    data = DataSpec(TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te]), make_task("binary"))
    r = check(data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["exact_leaked_share"] > 0.5
    assert r.metrics["exact_train_dup_share"] > 0.5


def with_feature(data: DataSpec, j: int, fn) -> DataSpec:
    """Both splits with input feature ``j`` replaced by ``fn(target)``."""

    def leak(ds: TensorDataset) -> TensorDataset:
        x, y = ds.tensors
        x = x.clone()
        x.view(len(x), -1)[:, j] = fn(y.float())
        return TensorDataset(x, y)

    return dataclasses.replace(data, train=leak(data.train), test=leak(data.test))


def test_target_copied_into_a_feature_fails_naming_it(cancer_data):
    r = check(with_feature(cancer_data, 3, lambda y: y))
    assert r.status == Status.FAIL, r.message
    assert "mean area gives the target away" in r.message


def test_class_index_copied_into_a_pixel_fails(digits_data):
    r = check(with_feature(digits_data, 27, lambda y: (y - 4.5) / 3))
    assert r.status == Status.FAIL, r.message
    assert "x[0, 3, 3]" in r.message


def test_a_one_hot_label_copied_into_the_inputs_fails(digits_data):
    # each copied column singles out one class: the label does not follow from any one of
    # them (the sorted test passes them), but each follows from the label
    def leak(ds: TensorDataset) -> TensorDataset:
        x, y = ds.tensors
        x = x.clone()
        x.view(len(x), -1)[:, :10] = torch.nn.functional.one_hot(y, 10).float()
        return TensorDataset(x, y)

    data = dataclasses.replace(
        digits_data, train=leak(digits_data.train), test=leak(digits_data.test)
    )
    r = check(data)
    assert r.status == Status.FAIL, r.message
    assert "the label determines it: its variance within the classes is 0.00%" in r.message
    assert r.metrics["n_target_coordinates"] == 10


def test_regression_target_in_another_unit_fails(diabetes_data):
    r = check(with_feature(diabetes_data, 0, lambda y: 1.8 * y + 32))
    assert r.status == Status.FAIL, r.message
    assert "rank correlation with the target is 1.0" in r.message


def test_target_in_inputs_can_be_switched_off_for_a_toy_problem(cancer_data):
    r = check(with_feature(cancer_data, 3, lambda y: y), target_in_inputs=False)
    assert r.status == Status.PASS, r.message


def test_dict_batches_are_hashed_whole():
    # planted bug on Hugging Face style items: the test split is training items
    data = H.marker_sequences()
    train = data.train
    cols = {k: v[:50] for k, v in train.columns.items()}  # type: ignore[attr-defined]
    r = check(dataclasses.replace(data, test=H.DictItems(**cols)))
    assert r.status == Status.FAIL, r.message
    assert r.metrics["n_leaked"] == 50 and "test 4 -> train 4" in r.message


def test_batches_padded_per_batch_are_read():
    # a collate that pads each batch to its longest sequence: widths differ between batches
    g = torch.Generator().manual_seed(0)
    seqs = [
        torch.randint(1, 30, (int(n),), generator=g)
        for n in torch.randint(4, 40, (700,), generator=g)
    ]
    labels = [int(s.sum()) % 3 for s in seqs]
    items = [{"input_ids": s, "labels": torch.tensor(c)} for s, c in zip(seqs, labels, strict=True)]

    def pad(batch: list) -> dict:
        t = max(len(b["input_ids"]) for b in batch)
        ids = torch.stack(
            [torch.nn.functional.pad(b["input_ids"], (0, t - len(b["input_ids"]))) for b in batch]
        )
        return {
            "input_ids": ids,
            "attention_mask": (ids != 0).long(),
            "labels": torch.stack([b["labels"] for b in batch]),
        }

    data = from_datasets(
        items[:600], items[600:] + items[:20], "multiclass", 3, kind="tokens", collate_fn=pad
    )
    r = check(data)  # 20 training items in the test split, padded to other widths there
    assert r.status == Status.FAIL, r.message
    assert r.metrics["exact_n_leaked"] == 20 and "test 100 -> train 0" in r.message


def test_items_without_tensors_skip_saying_what_to_set():
    # raw strings that a custom loader's collate would tokenize: nothing to hash here
    items = [(f"text {i}", i % 2) for i in range(40)]
    r = check(from_datasets(items[:30], items[30:], "binary"))
    assert r.status == Status.SKIP and "data.collate_fn" in r.message
