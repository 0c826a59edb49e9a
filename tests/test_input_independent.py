import dataclasses

import numpy as np
import torch
from conftest import prior_bias, run_check
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trackcheck.checks.input_independent import blank, paired_test
from trackcheck.core import Status
from trackcheck.models import GPT, MLP


def shuffled_labels(data, seed: int = 1):
    """Planted bug: the train labels permuted independently of the inputs."""
    x, y = data.train.tensors
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return dataclasses.replace(data, train=TensorDataset(x, y[perm]))


class IgnoresInput(MLP):
    """Planted bug: the input is multiplied by a zero mask before the network sees it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x * 0)


def test_passes_on_digits_at_the_first_look(digits_data):
    r = run_check("input_independent", lambda: MLP([1, 8, 8], 10, width=32), digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["steps"] == 30  # the evidence was in after one look
    for held_out in ("test_split", "training_slice"):
        assert r.metrics[f"{held_out}/p_value"] < 0.01 / 3
        assert r.metrics[f"{held_out}/loss_real"] < r.metrics[f"{held_out}/loss_blanked"]
        assert r.metrics[f"{held_out}/mean_gain_ci_lo"] > 0
    assert "compare" in r.figures


def test_fails_when_train_labels_are_shuffled(digits_data):
    bias = prior_bias(digits_data)
    r = run_check(
        "input_independent",
        lambda: MLP([1, 8, 8], 10, width=32, out_bias=bias),
        shuffled_labels(digits_data),
    )
    assert r.status == Status.FAIL
    assert "no information from its input" in r.message
    assert r.metrics["steps"] == 90  # every look was taken before giving up
    assert r.metrics["training_slice/p_value"] > 0.1


def test_the_training_slice_catches_what_luck_hides_in_the_test_split(digits_data):
    # With this permutation of the train labels the real-input model's random function happens
    # to line up with the digit clusters of the TEST split: judged there alone it looks
    # significantly better than the blanked baseline. The training slice carries the shuffled
    # labels, where no luck is to be had, and fails it.
    bias = prior_bias(digits_data)
    r = run_check(
        "input_independent",
        lambda: MLP([1, 8, 8], 10, width=32, out_bias=bias),
        shuffled_labels(digits_data, seed=4),
    )
    assert r.metrics["test_split/p_value"] < 0.01 / 3
    assert r.metrics["training_slice/p_value"] > 0.1
    assert r.status == Status.FAIL
    assert "on the training slice the model extracts no information" in r.message


def test_without_a_training_slice_only_the_test_split_is_judged(digits_data):
    r = run_check(
        "input_independent",
        lambda: MLP([1, 8, 8], 10, width=32),
        digits_data,
        params={"train_holdout": 0.0},
    )
    assert r.status == Status.PASS, r.message
    assert "training_slice/p_value" not in r.metrics and "test_split/p_value" in r.metrics


def test_judges_on_held_out_data_not_on_the_training_batches(digits_data):
    # with shuffled labels the real-input model memorises its training batches (lower training
    # loss than the blanked one): a judgement on training data would pass this bug
    bias = prior_bias(digits_data)
    r = run_check(
        "input_independent",
        lambda: MLP([1, 8, 8], 10, width=128, out_bias=bias),
        shuffled_labels(digits_data),
    )
    last_real = np.mean([v for _, v in r.series["train_loss_real"][-10:]])
    last_blank = np.mean([v for _, v in r.series["train_loss_blanked"][-10:]])
    assert last_real < last_blank
    assert r.status == Status.FAIL


def test_fails_when_the_model_ignores_its_input(digits_data):
    r = run_check("input_independent", lambda: IgnoresInput([1, 8, 8], 10), digits_data)
    assert r.status == Status.FAIL
    assert r.metrics["p_value"] == 1.0  # identical models: every gain is exactly zero
    assert r.metrics["test_split/fraction_better"] == 0.0


def test_passes_on_a_language_model(text_data):
    r = run_check(
        "input_independent", lambda: GPT(96, 32, d_model=32, n_head=2, n_layer=1), text_data
    )
    assert r.status == Status.PASS, r.message


def test_blanks_floats_to_zero_and_token_ids_to_one_constant_token():
    assert torch.equal(blank(torch.tensor([[1.5, -2.0]])), torch.zeros(1, 2))
    ids = torch.tensor([[5, 7, 9]])
    assert torch.equal(blank(ids, token_id=3), torch.full_like(ids, 3))
    x, m = blank((torch.ones(2), {"mask": torch.tensor([4])}))
    assert torch.equal(x, torch.zeros(2)) and torch.equal(m["mask"], torch.tensor([0]))


def test_paired_test_is_one_sided():
    rng = np.random.default_rng(0)
    better = rng.normal(0.5, 1.0, 200)
    assert paired_test(better) < 1e-3
    assert paired_test(-better) > 0.99
    assert paired_test(np.zeros(10)) == 1.0


def test_diverging_training_fails_with_the_reason(digits_data):
    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x.flatten(1)) * float("inf")

    r = run_check("input_independent", Exploding, digits_data)
    assert r.status == Status.FAIL
    assert "NaN/Inf" in r.message


def test_says_when_no_training_slice_could_be_held_out(digits_data):
    def users_loader(generator=None, batch_size=64):  # a custom loader cannot be split here
        return DataLoader(
            digits_data.train, batch_size=batch_size, shuffle=True, generator=generator
        )

    data = dataclasses.replace(digits_data, train_loader_fn=users_loader)
    r = run_check("input_independent", lambda: MLP([1, 8, 8], 10, width=32), data)
    assert r.status == Status.PASS, r.message
    assert "no training slice was held out" in r.message
