"""split_consistency: the test split's labels and input statistics match the training split's."""

from __future__ import annotations

import dataclasses

import helpers.hf_models as H
import pytest
import torch
from conftest import data_check
from torch.utils.data import TensorDataset

from trackcheck import CheckResult, DataSpec, Status, make_task
from trackcheck.checks.split_consistency import draw_splits
from trackcheck.data import breast_cancer, diabetes, digits, synthetic, text_corpus


def check(data: DataSpec, **params: object) -> CheckResult:
    return data_check("split_consistency", data, **params)


@pytest.mark.parametrize(
    "make", [digits, breast_cancer, diabetes, synthetic, H.marker_sequences, H.digit_pixels]
)
def test_shipped_and_third_party_data_pass(make):
    r = check(make())
    assert r.status == Status.PASS, r.message


def test_text_passes_on_its_token_distribution():
    r = check(text_corpus(seq_len=32, max_chars=40_000))
    assert r.status == Status.PASS, r.message
    assert 0 < r.metrics["label_effect"] < 0.5


def test_text_in_another_vocabulary_warns():
    # planted bug: the test text encoded with another tokenizer's ids (a permutation)
    data = text_corpus(seq_len=32, max_chars=40_000)
    perm = torch.randperm(96, generator=torch.Generator().manual_seed(0))
    data.test.ids = perm[data.test.ids]  # type: ignore[attr-defined]
    r = check(data)
    assert r.status == Status.WARN, r.message
    assert r.metrics["label_effect"] > 0.5 and "same vocabulary" in r.message


def with_test(data: DataSpec, x: torch.Tensor, y: torch.Tensor) -> DataSpec:
    return dataclasses.replace(data, test=TensorDataset(x, y))


def raw_digits_test(digits_data: DataSpec) -> DataSpec:
    """Planted bug: the test images without the training split's standardisation."""
    mean, std = digits_data.info["pixel_mean"], digits_data.info["pixel_std"]
    x, y = digits_data.test.tensors
    return with_test(digits_data, x * std + mean, y)


def test_test_split_without_normalisation_fails(digits_data):
    r = check(raw_digits_test(digits_data))
    assert r.status == Status.FAIL, r.message
    assert r.value > 4  # the raw mean, 4.9, in training standard deviations
    assert "channel 0" in r.message and "apply the training split's normalisation" in r.message


def test_tabular_features_not_standardised_are_named(cancer_data):
    x, y = cancer_data.test.tensors
    x = x.clone()
    x[:, [3, 23]] = x[:, [3, 23]] * 300 + 650  # mean area, worst area back to raw-like units
    r = check(with_test(cancer_data, x, y))
    assert r.status == Status.FAIL, r.message
    assert r.metrics["n_inputs_differ"] == 2
    assert "mean area" in r.message and "worst area" in r.message


def test_split_scaled_by_255_is_said(digits_data):
    x, y = digits_data.test.tensors
    r = check(with_test(digits_data, x * 255, y))
    assert r.status == Status.FAIL, r.message
    assert "scaled by 255" in r.message


def test_class_missing_from_the_test_split_warns_naming_it(digits_data):
    x, y = digits_data.test.tensors
    keep = y != 3
    r = check(with_test(digits_data, x[keep], y[keep]))
    assert r.status == Status.WARN, r.message
    assert r.metrics["label_p_value"] < 1e-3 and r.metrics["label_effect"] > 0.09
    assert "3 (0.0% of test vs 10.2% of train" in r.message


def test_oversampled_class_warns(digits_data):
    x, y = digits_data.test.tensors
    extra = (y == 7).nonzero()[:, 0].repeat(2)  # class 7 three times over
    r = check(with_test(digits_data, torch.cat([x, x[extra]]), torch.cat([y, y[extra]])))
    assert r.status == Status.WARN, r.message
    assert r.message.count("z = +") == 1 and "7 (" in r.message


def test_test_classes_never_trained_on_fail():
    # planted bug: a class-sorted dataset split by position
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(100)
    x = torch.randn(400, 8, generator=g) + y[:, None]
    data = DataSpec(
        TensorDataset(x[:300], y[:300]), TensorDataset(x[300:], y[300:]), make_task("multiclass", 4)
    )
    r = check(data)
    assert r.status == Status.FAIL, r.message
    assert "never seen in training: 3" in r.message


def test_a_single_test_example_of_an_untrained_class_only_warns():
    # a singleton class a random split sent to the test split: 1 of 101 test examples
    g = torch.Generator().manual_seed(0)
    y = torch.arange(401) % 4
    y[-1] = 4
    x = torch.randn(401, 8, generator=g)
    task = make_task("multiclass", 5)
    data = DataSpec(TensorDataset(x[:300], y[:300]), TensorDataset(x[300:], y[300:]), task)
    r = check(data)
    assert r.status == Status.WARN, r.message
    assert "never seen in training: 4" in r.message


def test_regression_targets_shifted_warn(diabetes_data):
    x, y = diabetes_data.test.tensors
    r = check(with_test(diabetes_data, x, y + 60))  # targets in another offset
    assert r.status == Status.WARN, r.message
    assert r.metrics["label_effect"] > 0.3


def test_figure_is_deferred_with_plain_data_and_draws(digits_data):
    r = check(raw_digits_test(digits_data))
    fig = r.figures["splits"]
    assert fig.fn is draw_splits
    assert not any(isinstance(a, torch.Tensor) for a in fig.args)
    drawn = draw_splits(
        ["0", "1"], [0.5, 0.5], [0.4, 0.6], "classes", ["f0"], [0.0], [1.0], [1.0], [2.0]
    )
    assert len(drawn.axes) == 3
