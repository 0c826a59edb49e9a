import dataclasses

import pytest
import torch
from conftest import run_check
from helpers.models import SlowBatchNormNet

from trackcheck import DataSpec
from trackcheck.core import Status
from trackcheck.models import MLP

CITED = {"human_metric": 0.98, "source": "own labelling of 200 test digits, 2026-11", "steps": 5}


def _model():  # type: ignore[no-untyped-def]
    return MLP([1, 8, 8], 10, width=16)


def _second_annotation(labels: torch.Tensor, rate: float, seed: int = 0) -> torch.Tensor:
    """An independent-looking second annotation: ``rate`` of the labels moved to another class."""
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(labels), generator=g) < rate
    out = labels.clone()
    out[flip] = (out[flip] + 1) % 10
    return out


def _annotated(data: DataSpec, human: torch.Tensor) -> DataSpec:
    return dataclasses.replace(data, human_labels=human)


def test_skips_without_a_baseline_and_says_how_to_give_one(digits_data):
    r = run_check("human_baseline", _model, digits_data)
    assert r.status == Status.SKIP
    assert "checks.human_baseline.human_metric=0.98" in r.message
    assert "human_labels=" in r.message


def test_a_cited_number_is_logged_beside_the_model(digits_data):
    r = run_check("human_baseline", _model, digits_data, CITED)
    assert r.status == Status.PASS, r.message
    assert r.metrics["human_accuracy"] == 0.98
    assert 0 <= r.metrics["model_accuracy_ci_lo"] <= r.metrics["model_accuracy"]
    assert r.metrics["model_accuracy_n"] == 360
    assert "own labelling of 200 test digits" in r.message and "side_by_side" in r.figures


def test_a_number_without_a_source_warns(digits_data):
    r = run_check("human_baseline", _model, digits_data, {"human_metric": 0.98, "steps": 5})
    assert r.status == Status.WARN
    assert "no source" in r.message


def test_fails_on_a_number_outside_the_metric_range(digits_data):
    r = run_check("human_baseline", _model, digits_data, {**CITED, "human_metric": 98.0})
    assert r.status == Status.FAIL
    assert "outside the valid range of accuracy [0, 1]" in r.message and "use 0.98" in r.message


def test_agreement_between_two_annotations_is_the_baseline(digits_data):
    truth = digits_data.test.tensors[1]
    human = _second_annotation(truth, rate=0.03)
    r = run_check("human_baseline", _model, _annotated(digits_data, human), {"steps": 5})
    assert r.status == Status.PASS, r.message
    agreement = float((human == truth).float().mean())
    assert r.metrics["annotator_accuracy"] == pytest.approx(agreement)
    assert r.metrics["annotator_accuracy_ci_lo"] < agreement < r.metrics["annotator_accuracy_ci_hi"]
    assert "paired 95% CI" in r.message


def test_warns_when_the_second_annotation_is_a_copy_of_the_labels(digits_data):
    copy = digits_data.test.tensors[1].clone()
    r = run_check("human_baseline", _model, _annotated(digits_data, copy), {"steps": 5})
    assert r.status == Status.WARN
    assert r.metrics["annotator_accuracy"] == 1.0
    assert "most likely a copy of the labels" in r.message


def test_fails_when_the_second_annotation_is_the_labels_themselves(digits_data):
    same = digits_data.test.tensors[1]  # the very tensor: not an annotation at all
    r = run_check("human_baseline", _model, _annotated(digits_data, same), {"steps": 5})
    assert r.status == Status.FAIL
    assert "the same memory" in r.message


def test_fails_on_a_misaligned_second_annotation(digits_data):
    short = digits_data.test.tensors[1][:-1].clone()
    r = run_check("human_baseline", _model, _annotated(digits_data, short), {"steps": 5})
    assert r.status == Status.FAIL
    assert "one label per test example" in r.message


def test_regression_annotations_give_a_human_mae(diabetes_data):
    truth = diabetes_data.test.tensors[1]
    human = truth + torch.randn(len(truth), generator=torch.Generator().manual_seed(0)) * 10
    r = run_check(
        "human_baseline",
        lambda: MLP([10], 1, out_bias=152.0),
        _annotated(diabetes_data, human),
        {"steps": 5},
    )
    assert r.status == Status.PASS, r.message
    assert r.metrics["annotator_mae"] == pytest.approx(float((human - truth).abs().mean()))
    assert "model_mae" in r.metrics


def test_a_batchnorm_model_is_measured_with_statistics_of_its_trained_weights(digits_data):
    # BatchNorm momentum 0.01: after 50 steps the running statistics as training left them
    # give chance accuracy (0.10-0.19 over 5 seeds); recomputed on training batches, 0.51-0.67
    r = run_check("human_baseline", SlowBatchNormNet, digits_data, {**CITED, "steps": 50})
    assert r.status == Status.PASS, r.message
    assert r.metrics["model_accuracy"] > 0.3
