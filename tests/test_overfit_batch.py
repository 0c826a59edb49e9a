from pathlib import Path

import pytest
import torch
from conftest import blobs, prior_bias, run_check
from helpers.models import SoftmaxBeforeCE

from trackcheck.checks.overfit_batch import _overlay
from trackcheck.context import Context
from trackcheck.core import Status
from trackcheck.models import GPT, MLP, ResNet


def test_resnet_memorises_four_digits(digits_data):
    r = run_check("overfit_batch", lambda: ResNet([1, 8, 8], 10), digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["best_loss"] <= r.metrics["target_loss"]
    assert Path(r.figures["overlay"]).is_file()


def test_two_examples_are_enough():
    data = blobs()
    r = run_check("overfit_batch", lambda: MLP([8], 4), data, {"n_examples": 2})
    assert r.status == Status.PASS, r.message
    assert "2 examples" in r.message


def test_fails_when_softmax_is_applied_before_cross_entropy(digits_data):
    # with probabilities as logits the loss cannot drop below -log(e / (e + 9)) = 1.46,
    # so 100 steps show the failure as well as 300
    r = run_check(
        "overfit_batch", lambda: SoftmaxBeforeCE([1, 8, 8], 10), digits_data, {"max_steps": 100}
    )
    assert r.status == Status.FAIL
    assert "softmax" in r.message


def test_regression_fits_a_tiny_batch(diabetes_data):
    r = run_check(
        "overfit_batch",
        lambda: MLP([10], 1, out_bias=prior_bias(diabetes_data)),
        diabetes_data,
        optimizer=lambda ps: torch.optim.Adam(ps, lr=1e-2),
    )
    assert r.status == Status.PASS, r.message


def test_language_model_fits_a_tiny_batch(text_data):
    r = run_check("overfit_batch", lambda: GPT(96, 32, d_model=32, n_layer=1), text_data)
    assert r.status == Status.PASS, r.message
    assert Path(r.figures["overlay"]).is_file()


def overlay_of(data, out: torch.Tensor, y: torch.Tensor):
    ctx = Context(lambda: torch.nn.Identity(), data, lambda ps: torch.optim.SGD(ps, lr=0.1))
    return _overlay(ctx, out, y, best=0.0).draw()  # a Deferred: the data now, drawn here


def test_the_token_overlay_decodes_labels_and_predictions_and_marks_ignored_positions(text_data):
    itos = text_data.itos
    y = torch.tensor([[itos.index("a"), itos.index("b"), -100]])
    out = torch.nn.functional.one_hot(torch.tensor([[itos.index("a"), itos.index("c"), 0]]), 96)
    texts = [t.get_text() for t in overlay_of(text_data, out.float(), y).axes[0].texts]
    assert texts == ["label: ab\u00b7", "pred:  ac\u00b7"]


def test_the_value_overlay_draws_each_label_beside_its_prediction(diabetes_data):
    y, yhat = torch.tensor([100.0, 200.0]), torch.tensor([[110.0], [190.0]])
    ax = overlay_of(diabetes_data, yhat, y).axes[0]
    labels, preds = (c.get_offsets()[:, 1].tolist() for c in ax.collections)
    assert labels == [100.0, 200.0] and preds == [110.0, 190.0]


def test_loss_series_has_one_point_per_step():
    r = run_check("overfit_batch", lambda: MLP([8], 4), blobs())
    assert len(r.series["loss"]) == int(r.metrics["steps"])


def test_label_smoothing_fits_down_to_its_floor(digits_data):
    # the false alarm: with label smoothing 0.1 the best loss on 10 classes is the entropy
    # of the smoothed target, -0.91 ln 0.91 - 9 x 0.01 ln 0.01 = 0.500, never "near zero"
    loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    r = run_check("overfit_batch", lambda: ResNet([1, 8, 8], 10), digits_data, loss=loss)
    assert r.status == Status.PASS, r.message
    assert abs(r.metrics["floor_loss"] - 0.500) < 0.005
    assert r.metrics["best_loss"] > 0.45  # below 0.05 x 2.3 = 0.115 was what it demanded
    assert "cannot go below 0.5" in r.message


def test_softmax_before_smoothed_cross_entropy_still_fails(digits_data):
    loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    r = run_check(
        "overfit_batch",
        lambda: SoftmaxBeforeCE([1, 8, 8], 10),
        digits_data,
        {"max_steps": 100},
        loss=loss,
    )
    assert r.status == Status.FAIL
    assert r.metrics["best_loss"] > r.metrics["target_loss"]


def test_plain_cross_entropy_has_floor_zero(digits_data):
    r = run_check("overfit_batch", lambda: MLP([1, 8, 8], 10), digits_data)
    assert r.metrics["floor_loss"] < 1e-6
    assert abs(r.metrics["reference_loss"] - 2.30) < 0.05  # H(digits' labels), nearly ln 10


def test_hugging_face_gpt2_fits_dict_batches_with_padding():
    # dict batches {"input_ids", "attention_mask", "labels"}, a ModelOutput, -100 positions
    from helpers.hf_models import gpt2, lm_dicts

    r = run_check("overfit_batch", gpt2, lm_dicts(), {"n_examples": 8})
    assert r.status == Status.PASS, r.message
    assert Path(r.figures["overlay"]).is_file()


def test_skips_a_fully_frozen_model_with_a_pointer():
    def frozen() -> torch.nn.Module:
        return MLP([8], 4).requires_grad_(False)

    r = run_check("overfit_batch", frozen, blobs())
    assert r.status == Status.SKIP
    assert "requires grad" in r.message and "contract" in r.message


def test_lr_too_high_to_memorise_warns_when_a_lower_lr_fits() -> None:
    # SGD at lr 10 blows up on 4 examples; at lr 1 they fit: wired right, the lr is wrong
    r = run_check(
        "overfit_batch",
        lambda: MLP([8], 4, width=32),
        blobs(),
        optimizer=lambda ps: torch.optim.SGD(ps, lr=10.0),
    )
    assert r.status == Status.WARN, r.message
    assert r.metrics["retry_lr"] == 1.0
    assert r.metrics["retry_best_loss"] <= r.metrics["target_loss"] < r.metrics["best_loss"]
    assert "the lr is too high to memorise" in r.message


def test_lr_too_low_to_memorise_warns_when_a_higher_lr_fits() -> None:
    # SGD at 1e-2 is still descending after 300 steps (loss 0.28); at 0.1 the batch fits
    r = run_check(
        "overfit_batch",
        lambda: MLP([8], 4, width=32),
        blobs(),
        optimizer=lambda ps: torch.optim.SGD(ps, lr=1e-2),
    )
    assert r.status == Status.WARN, r.message
    assert r.metrics["retry_lr"] == pytest.approx(0.1)
    assert "the lr is too low to memorise" in r.message
