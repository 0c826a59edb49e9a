import dataclasses
import functools

import numpy as np
import pytest
import torch
from conftest import prior_bias, run_check
from helpers.models import SlowBatchNormNet
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trackcheck.checks.input_independent import (
    InputIndependentParams,
    Judged,
    _behind,
    blank,
    weigh,
)
from trackcheck.checks.input_independent._stats import paired_test, power
from trackcheck.core import Status
from trackcheck.models import GPT, MLP


def shuffled_labels(data, seed: int = 1):
    """Planted bug: the train labels permuted independently of the inputs."""
    *xs, y = data.train.tensors  # the inputs (one tensor, or several) and the labels
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    return dataclasses.replace(data, train=TensorDataset(*xs, y[perm]))


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


def low_lr(params):  # type: ignore[no-untyped-def]
    """SGD 1e-4: far too low for these models to move in a few hundred steps."""
    return torch.optim.SGD(params, lr=1e-4)


def test_a_correct_model_at_a_far_too_low_lr_is_undecided_not_failed(digits_data):
    # in 90 steps neither model moves: the real one stays where its random init put it,
    # above the blanked one at the prior (a negative gain the data "rule out" anything
    # against), yet no gain could have shown. It failed before; now it trains on to the
    # cap and warns with the lr and what moved
    r = run_check(
        "input_independent",
        lambda: MLP([1, 8, 8], 10, width=32),
        digits_data,
        {"extend_to": 180},
        optimizer=low_lr,
    )
    assert r.status == Status.WARN, r.message
    assert r.metrics["steps"] == 180 and r.metrics["unlearnt"] == 1.0
    assert abs(r.metrics["real_moved"]) < 0.01 * r.metrics["prior_loss"]
    assert "undecided after 180 steps" in r.message and "at lr 0.0001" in r.message
    assert "has not trained yet" in r.message


def test_a_model_that_ignores_its_input_fails_at_any_lr(digits_data):
    # both models compute the same function exactly: decided whatever the lr
    r = run_check(
        "input_independent", lambda: IgnoresInput([1, 8, 8], 10), digits_data, optimizer=low_lr
    )
    assert r.status == Status.FAIL, r.message
    assert r.metrics["steps"] == 90  # nothing to wait for


def test_shuffled_labels_are_decided_within_the_budget(digits_data):
    # the real model's training loss falls (it memorises its shuffled labels) and the
    # blanked one sits at the prior: the run can decide, so it is not extended and fails
    r = run_check(
        "input_independent",
        lambda: MLP([1, 8, 8], 10, width=32, out_bias=prior_bias(digits_data)),
        shuffled_labels(digits_data),
    )
    assert r.status == Status.FAIL and "unlearnt" not in r.metrics
    assert r.metrics["steps"] == 90
    curve = [v for _, v in r.series["train_loss_real"]]
    assert np.median(curve[-22:]) < 0.99 * np.median(curve[:22])  # it memorises: it moved
    assert abs(r.metrics["blanked_loss"] - r.metrics["prior_loss"]) < 0.01 * r.metrics["prior_loss"]


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


def test_keyword_inputs_lose_their_content_and_keep_their_padding_mask():
    mask = torch.tensor([[1, 1, 0]])
    out = blank({"input_ids": torch.tensor([[5, 7, 0]]), "attention_mask": mask}, token_id=3)
    assert torch.equal(out["input_ids"], torch.full((1, 3), 3))
    assert torch.equal(out["attention_mask"], mask)


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


def test_passes_a_model_with_slow_batchnorm_momentum(digits_data):
    # momentum 0.01 (torchvision's MobileNetV3): judged on its running statistics as training
    # left them, this correct model fails on 8 of 8 seeds (eval mode at chance, test_bn.py);
    # recomputed on training batches, it passes at the first look
    r = run_check("input_independent", SlowBatchNormNet, digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["steps"] == 30


def _diabetes_subset(data, n: int, seed: int):  # type: ignore[no-untyped-def]
    x, y = data.train.tensors
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(100 + seed))[:n]
    return dataclasses.replace(data, train=TensorDataset(x[idx], y[idx]))


def test_a_small_training_slice_is_undecided_not_failed(diabetes_data):
    # 200 training examples: a training slice of 40 cannot resolve the gain that the test
    # split (89 examples) shows decisively; before, the check failed this correct model
    data = _diabetes_subset(diabetes_data, 200, seed=4)
    r = run_check(
        "input_independent", lambda: MLP([10], 1, out_bias=prior_bias(data)), data, seed=4
    )
    assert r.status == Status.WARN, r.message
    assert r.metrics["test_split/p_value"] < 0.01 / 3 <= r.metrics["training_slice/p_value"]
    assert r.metrics["training_slice/power"] < 0.8
    assert "undecided: the training slice (40 examples) cannot resolve a gain of" in r.message
    assert "raise checks.input_independent.train_holdout" in r.message


def test_never_fails_a_correct_model_on_a_small_dataset(diabetes_data):
    # measured on 200-example subsets, 8 seeds: 7 pass, 1 warn (seed 4, above); the old
    # rule (fail when any set is not significant) failed seed 4
    for seed in range(4):
        data = _diabetes_subset(diabetes_data, 200, seed)
        model = functools.partial(MLP, [10], 1, out_bias=prior_bias(data))
        r = run_check("input_independent", model, data, seed=seed)
        assert r.status != Status.FAIL, r.message


def _judged(gain: np.ndarray) -> Judged:
    return Judged(real=np.zeros(len(gain)), blanked=gain)


def _gains(n: int, mean: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, 1.0, n)


PARAMS = InputIndependentParams()
LEVEL = PARAMS.alpha / 3


def test_a_set_too_small_for_the_decisive_gain_is_undecided():
    sets = {
        "test split": _judged(_gains(400, 0.3, 0)),
        "training slice": _judged(_gains(30, 0.3, 1)),
    }
    (u,) = weigh(sets, LEVEL, PARAMS)
    assert u.name == "training slice" and u.p_below >= PARAMS.alpha
    assert u.effect == pytest.approx(sets["test split"].gain.mean())
    assert u.power < 0.5


def test_a_set_that_rules_out_the_decisive_gain_fails():
    sets = {
        "test split": _judged(_gains(400, 0.3, 0)),
        "training slice": _judged(_gains(400, 0.0, 1)),
    }
    (u,) = weigh(sets, LEVEL, PARAMS)
    assert u.p_below < PARAMS.alpha and u.power > 0.9  # FAIL


def test_without_a_decisive_set_the_pooled_gains_meet_the_minimal_effect():
    small = {
        "test split": _judged(_gains(15, 0.2, 0)),
        "training slice": _judged(_gains(10, 0.2, 1)),
    }
    (u,) = weigh(small, LEVEL, PARAMS)
    assert (
        u.key == "pooled" and u.n == 25 and u.p_below >= PARAMS.alpha
    )  # 25 examples cannot tell 0 from 0.38
    large = {
        "test split": _judged(_gains(300, 0.0, 0)),
        "training slice": _judged(_gains(200, 0.0, 1)),
    }
    (u,) = weigh(large, LEVEL, PARAMS)
    assert u.p_below < PARAMS.alpha  # 500 examples rule out 0.38 standard deviations: FAIL


def test_power_is_the_level_at_no_effect_and_grows_with_n_and_effect():
    assert power(50, 0.0, 0.01) == pytest.approx(0.01, rel=1e-6)
    assert power(50, 0.5, 0.01) < power(100, 0.5, 0.01) < power(100, 0.8, 0.01)
    # a simulation of the one-sided paired t-test agrees: 4000 sets of 40 gains
    gains = np.random.default_rng(0).normal(0.4, 1.0, (4000, 40))
    t = gains.mean(1) / gains.std(1, ddof=1) * np.sqrt(40)
    hits = float((t > stats.t.ppf(0.99, 39)).mean())
    assert hits == pytest.approx(power(40, 0.4, 0.01), abs=0.025)


def test_a_tuple_keeps_its_lengths_and_masks_and_blanks_its_content():
    x, lengths, mask = torch.ones(2, 3, 4), torch.tensor([3, 1]), torch.tensor([[True, False]])
    bx, bl, bm = blank((x, lengths, mask))
    assert torch.equal(bx, torch.zeros(2, 3, 4))
    assert torch.equal(bl, lengths) and torch.equal(bm, mask)
    ids = torch.tensor([[5, 7], [2, 1]])  # token ids beside the content: content too
    assert torch.equal(blank((x, ids), token_id=3)[1], torch.full_like(ids, 3))


def test_a_packed_sequence_model_with_a_lengths_input_passes():
    from helpers.packed import PackedRNN, packed_data

    r = run_check("input_independent", PackedRNN, packed_data())
    assert r.status == Status.PASS, r.message


def test_a_packed_sequence_model_with_shuffled_labels_fails():
    from helpers.packed import PackedRNN, packed_data

    r = run_check("input_independent", PackedRNN, shuffled_labels(packed_data()))
    assert r.status == Status.FAIL, r.message


def test_a_batchnorm_models_baseline_trains_on_noise_with_the_inputs_moments(digits_data):
    # d2l's ResNet-18 at its SGD lr 0.05: on all-zero inputs every BatchNorm sees zero
    # variance and the baseline diverged (NaN at step 4, a FAIL that said nothing about the
    # model); on noise with the inputs' per-pixel mean and std it trains to the prior
    from helpers.public_programs import d2l_resnet18

    r = run_check(
        "input_independent",
        d2l_resnet18,
        digits_data,
        optimizer=lambda ps: torch.optim.SGD(ps, lr=0.05),
    )
    assert r.status == Status.PASS, r.message
    assert "blanked inputs are Gaussian noise" in r.message
    assert r.metrics["test_split/loss_blanked"] == pytest.approx(2.3, abs=0.1)  # ~ ln 10


@pytest.mark.slow
def test_shuffled_labels_still_fail_on_a_batchnorm_model(digits_data):
    # the noise baseline must not let the planted bug through: measured on seeds 0-2 at SGD
    # 0.05 and at Adam 3e-3, all FAIL
    from helpers.public_programs import d2l_resnet18

    r = run_check(
        "input_independent",
        d2l_resnet18,
        shuffled_labels(digits_data),
        optimizer=lambda ps: torch.optim.SGD(ps, lr=0.05),
    )
    assert r.status == Status.FAIL, r.message
    assert "no information from its input" in r.message


def test_noise_blanks_keep_the_inputs_moments_and_nothing_else():
    from trackcheck.checks.input_independent._heldout import Noise

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 3) * torch.tensor([1.0, 5.0, 0.0]) + torch.tensor([0.0, 2.0, 7.0])
    noise = Noise.fit([x[:2048], x[2048:]], g)
    assert noise is not None
    b = blank(x[:1024], noise=noise)
    assert torch.allclose(b.mean(0), x.mean(0), atol=0.4)
    assert torch.allclose(b.std(0), x.std(0), rtol=0.1, atol=1e-6)
    assert abs(float(torch.corrcoef(torch.stack([b[:, 1], x[:1024, 1]]))[0, 1])) < 0.1
    ids = torch.tensor([[5, 7]])
    assert torch.equal(blank(ids, token_id=3, noise=noise), torch.full_like(ids, 3))


def test_the_lengths_of_packed_sequences_are_kept_when_blanking():
    # a tuple batch (tokens, lengths, label) as for pack_padded_sequence: zero lengths crash
    # it, and the lengths carry no more than the layout; the tokens are blanked
    tokens, lengths = torch.tensor([[5, 7, 0], [4, 0, 0]]), torch.tensor([2, 1])
    out_tokens, out_lengths = blank((tokens, lengths), token_id=3)
    assert torch.equal(out_tokens, torch.full_like(tokens, 3))
    assert torch.equal(out_lengths, lengths)


def test_a_model_still_coming_down_to_the_prior_is_undecided_not_failed():
    # the tutorial's polynomial fit (tests/corpus/tut_poly_sin: unstandardised features x,
    # x^2, x^3, RMSprop 1e-3) starts at ~70x the prior's loss and is still falling at the
    # cap, above the blanked model that sits at the prior: no gain could show yet
    import corpus

    prog = corpus.module("tut_poly_sin").program()
    r = run_check("input_independent", prog.pop("model"), prog.pop("data"), **prog)
    assert r.status == Status.WARN, r.message
    assert r.metrics["real_moved"] < 0 and r.metrics["real_loss"] > r.metrics["prior_loss"]
    assert "still falling" in r.message


def test_shuffled_targets_of_that_model_are_not_passed():
    # the same program with its training targets permuted: within the cap its real model is
    # still coming down from far above too, so the check cannot tell the two apart and says
    # so (a warning naming the lr), never a pass. Decided cases: the digits tests above
    import corpus

    prog = corpus.module("tut_poly_sin").program()
    r = run_check("input_independent", prog.pop("model"), shuffled_labels(prog.pop("data")), **prog)
    assert r.status == Status.WARN and "undecided" in r.message, r.message


# --- a test split from another stretch of the data: a smaller gain is not "no information" ---


def test_a_test_split_that_gains_less_but_not_nothing_is_undecided_not_failed():
    # PyTorch's word-language-model example: its test text is a later stretch of the corpus;
    # after 360 steps it gains 0.05 there (34 sequences) against 0.33 on the training slice
    # (about 0.2 and 1.1 standard deviations). The sets' gains differ (Welch), but the test
    # split's own data cannot rule out the minimal effect: a smaller gain, not none
    sets = {
        "test split": _judged(_gains(34, 0.18, 200)),
        "training slice": _judged(_gains(61, 1.1, 100)),
    }
    (u,) = weigh(sets, LEVEL, PARAMS)
    assert u.name == "test split" and u.p_below >= PARAMS.alpha  # WARN, not FAIL
    assert "below the training slice's (p=" in u.also and "may differ in distribution" in u.also


def test_a_test_split_that_gains_nothing_against_a_decisive_slice_still_fails():
    # train and test preprocessed differently: the test split gains nothing; its own data
    # rule out both the training slice's gain and the minimal effect
    sets = {
        "test split": _judged(_gains(300, 0.0, 0)),
        "training slice": _judged(_gains(300, 1.1, 1)),
    }
    (u,) = weigh(sets, LEVEL, PARAMS)
    assert u.p_below < PARAMS.alpha and "and below 0.38 standard deviations" in u.also


# --- a new head on a frozen trunk at a low lr: not yet learnt, even on its training batches ---

REAL, BLANK = "real inputs", "blanked inputs"


def test_a_model_behind_the_blank_on_its_own_batches_and_still_coming_down_is_unlearnt():
    # the transfer-learning tutorial's head on a frozen trunk (SGD 1e-3, batch 4) after 90
    # steps: on the batches both models train on the real one is still 0.005 above the
    # blanked one (it starts further from the prior), and its held-out loss is coming down
    rng = np.random.default_rng(0)
    blanked = 1.387 + rng.normal(0, 0.01, 90)
    real = blanked + 0.005 + rng.normal(0, 0.01, 90)
    why = _behind({REAL: list(real), BLANK: list(blanked)}, moved=-0.0128, alpha=PARAMS.alpha)
    assert "not yet below the blanked model" in why and "still coming down" in why


def test_a_model_that_memorises_its_batches_is_not_unlearnt():
    # shuffled labels: the real model memorises, 0.03 below the blank on its own batches
    # (digits, 90 steps), and learns nothing that carries to held-out data: decided
    rng = np.random.default_rng(0)
    blanked = 2.303 + rng.normal(0, 0.02, 90)
    real = blanked - 0.03 + rng.normal(0, 0.02, 90)
    assert _behind({REAL: list(real), BLANK: list(blanked)}, -0.01, PARAMS.alpha) == ""
    # and a real model whose held-out loss rises since init is decided whatever its batches
    assert _behind({REAL: list(blanked + 0.005), BLANK: list(blanked)}, 0.01, PARAMS.alpha) == ""


def test_a_new_head_on_a_frozen_trunk_at_a_low_lr_is_not_failed():
    # the corpus program whose seed-1 run failed at 90 steps (both models at the prior's
    # loss); the order of checks as the full checklist runs them sets the same init for both
    import corpus

    import trackcheck

    report = trackcheck.run(
        **corpus.kwargs("pre_frozen_backbone"),
        checks=["contract", "input_independent"],
        seed=1,
        progress=False,
    )
    r = report["input_independent"]
    assert r.status != Status.FAIL, r.message
