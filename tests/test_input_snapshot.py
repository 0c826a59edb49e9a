import dataclasses

import torch
from conftest import blobs, run_check
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trackcheck.core import Status
from trackcheck.models import GPT, MLP


def with_train_x(data, x):
    return dataclasses.replace(data, train=TensorDataset(x, data.train.tensors[1]))


def test_passes_on_digits_with_an_image_grid_and_channel_stats(digits_data):
    r = run_check("input_snapshot", lambda: MLP([1, 8, 8], 10), digits_data)
    assert r.status == Status.PASS, r.message
    assert "inputs" in r.figures
    assert r.tables["stats"]["columns"] == ["channel", "mean", "std", "min", "max", "rms"]
    assert len(r.tables["stats"]["rows"]) == 1  # one grey channel
    assert abs(r.metrics["mean/channel_0"]) < 0.3 and 0.7 < r.metrics["std/channel_0"] < 1.3


def test_fails_on_a_nan_in_a_sample_and_says_where():
    data = blobs(n=64)  # 48 training examples, all in the one batch the hook captures
    x = data.train.tensors[0].clone()
    x[5, 3] = float("nan")
    data = dataclasses.replace(with_train_x(data, x), batch_size=64)
    r = run_check("input_snapshot", lambda: MLP([8], 4), data)
    assert r.status == Status.FAIL
    assert "1 non-finite input values (1 NaN, 0 Inf)" in r.message
    assert "(feature 3)" in r.message
    assert r.metrics["nonfinite_inputs"] == 1


def test_finds_a_nan_outside_the_captured_batch(digits_data):
    x = digits_data.train.tensors[0].clone()
    x[200, 0, 4, 4] = float("nan")  # in the 4th batch of an unshuffled loader

    def in_order(generator=None, batch_size=64):  # a user's loader: fixed order
        return DataLoader(TensorDataset(x, digits_data.train.tensors[1]), batch_size=batch_size)

    data = dataclasses.replace(digits_data, train_loader_fn=in_order)
    r = run_check("input_snapshot", lambda: MLP([1, 8, 8], 10), data)
    assert r.status == Status.FAIL
    assert r.metrics["nonfinite_inputs"] == 0 and r.metrics["scan_nonfinite_inputs"] == 1
    assert "not in the batch shown" in r.message


def test_warns_on_raw_0_255_pixels(digits_data):
    mean, std = digits_data.info["pixel_mean"], digits_data.info["pixel_std"]
    raw = ((digits_data.train.tensors[0] * std + mean) * 255 / 16).round()  # 0..255
    r = run_check("input_snapshot", lambda: MLP([1, 8, 8], 10), with_train_x(digits_data, raw))
    assert r.status == Status.WARN
    assert "raw 0-255 pixels" in r.message
    assert r.metrics["max_rms"] > 100


def test_sees_a_batch_level_transform_after_collate(digits_data):
    # the dataset is standardised, but the collate function scales each batch by 100: the
    # snapshot shows what the model got, not what the dataset holds
    def scaling_collate(items):
        x, y = torch.utils.data.default_collate(items)
        return x * 100, y

    data = dataclasses.replace(digits_data, collate_fn=scaling_collate)
    r = run_check("input_snapshot", lambda: MLP([1, 8, 8], 10), data)
    assert r.status == Status.WARN
    assert 50 < r.metrics["max_rms"] < 200


def test_tabular_rows_carry_feature_names_and_labels(cancer_data):
    r = run_check("input_snapshot", lambda: MLP([30], 1), cancer_data)
    assert r.status == Status.PASS, r.message
    rows = r.tables["rows"]
    assert rows["columns"][1] == "mean radius" and rows["columns"][-1] == "label"
    assert {row[-1] for row in rows["rows"]} <= {"malignant", "benign"}
    assert "mean/mean_radius" in r.metrics


def test_fails_on_a_nan_label():
    data = blobs("regression", n=64)
    y = data.train.tensors[1].clone()
    y[7] = float("nan")
    data = dataclasses.replace(data, train=TensorDataset(data.train.tensors[0], y), batch_size=64)
    r = run_check("input_snapshot", lambda: MLP([8], 1), data)
    assert r.status == Status.FAIL
    assert "1 non-finite labels (examples [" in r.message


def test_decodes_tokens_and_shows_next_token_labels(text_data):
    r = run_check("input_snapshot", lambda: GPT(96, 32, d_model=32, n_layer=1), text_data)
    assert r.status == Status.PASS, r.message
    for _, text, label in r.tables["decoded"]["rows"]:
        assert len(text) == 32 and text[1:] == label[:-1]  # labels are the inputs shifted by one
    assert r.metrics["max_id"] < 96


def test_keyword_inputs_show_the_content_tensor_not_the_mask():
    from helpers.hf_models import DictItems, marker_sequences

    class BagOfTokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(32, 8)
            self.head = nn.Linear(8, 4)

        def forward(self, attention_mask: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
            return self.head((self.emb(input_ids) * attention_mask[..., None]).mean(1))

    data = marker_sequences()
    for ds in (data.train, data.test):  # the mask first: the forward receives it first
        cols = ds.columns  # type: ignore[attr-defined]
        ds.columns = {"attention_mask": cols["attention_mask"], **cols}  # type: ignore[attr-defined]
    assert isinstance(data.train, DictItems)
    r = run_check("input_snapshot", BagOfTokens, data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["max_id"] > 1  # token ids, not the 0/1 attention_mask
