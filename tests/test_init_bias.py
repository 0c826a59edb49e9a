import torch
from conftest import blobs, prior_bias, run_check
from torch.utils.data import TensorDataset

from trackcheck import DataSpec, make_task
from trackcheck.core import Status
from trackcheck.models import MLP


def imbalanced(ratio: int = 10, n: int = 1100) -> DataSpec:
    """Binary data with 1 positive for every ``ratio`` negatives."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (torch.arange(n) % (ratio + 1) == 0).float()
    x[y == 1] += 1.0
    return DataSpec(TensorDataset(x, y), TensorDataset(x[:100], y[:100]), make_task("binary"))


def test_fails_on_bias_zero_for_1_to_10_imbalance():
    data = imbalanced()
    r = run_check("init_bias", lambda: MLP([8], 1, out_bias=0.0), data)
    assert r.status == Status.FAIL
    assert r.value > 1.0  # KL(0.09 || 0.5) / H(0.09) = 1.27: the bias costs more than the rest
    assert "-2.3" in r.message  # logit(1/11) = -2.30, the fix


def test_passes_when_bias_carries_the_prior():
    data = imbalanced()
    r = run_check("init_bias", lambda: MLP([8], 1, out_bias=prior_bias(data)), data)
    assert r.status == Status.PASS, r.message


def test_fails_on_regression_mean_50_with_bias_zero():
    data = blobs("regression", y_shift=50.0)
    r = run_check("init_bias", lambda: MLP([8], 1, out_bias=0.0), data)
    assert r.status == Status.FAIL
    assert (
        abs(r.metrics["target_mean"] - 50) < 1 and "set the final layer's bias to [50" in r.message
    )


def test_regression_passes_with_bias_at_mean(diabetes_data):
    r = run_check(
        "init_bias", lambda: MLP([10], 1, out_bias=prior_bias(diabetes_data)), diabetes_data
    )
    assert r.status == Status.PASS, r.message
    assert abs(r.metrics["target_mean"] - 152) < 5


def test_balanced_multiclass_passes_with_default_init(digits_data):
    r = run_check("init_bias", lambda: MLP([1, 8, 8], 10), digits_data)
    assert r.status == Status.PASS, r.message


V = 64  # a small vocabulary with a Zipf-like unigram distribution: a strong token prior


def zipf_tokens(n: int = 320, seq_len: int = 32) -> DataSpec:
    """Hugging Face causal-LM items {"input_ids", "attention_mask", "labels"} of tokens
    drawn with p(k) ~ 1 / (k + 1)^1.5: H = 2.38 nats against ln 64 = 4.16, so a uniform
    start costs KL / H = 0.71 of the loss, over the fail line (0.5)."""
    from helpers.hf_models import DictItems

    g = torch.Generator().manual_seed(0)
    p = 1.0 / torch.arange(1, V + 1).double() ** 1.5
    ids = torch.multinomial(p / p.sum(), n * seq_len, replacement=True, generator=g)
    ids = ids.reshape(n, seq_len)
    mask = torch.ones_like(ids)

    def items(s: slice) -> DictItems:
        return DictItems(input_ids=ids[s], attention_mask=mask[s], labels=ids[s])

    cut = n * 3 // 4
    return DataSpec(items(slice(0, cut)), items(slice(cut, n)), make_task("lm", V), kind="tokens")


def tiny_gpt2() -> torch.nn.Module:
    """Hugging Face GPT2LMHeadModel (n_embd 32), random init: lm_head tied to wte, no bias."""
    from helpers.hf_models import gpt2

    return gpt2(n_positions=32, vocab=V)


def test_tied_lm_head_without_bias_is_information_not_a_warning():
    # the false alarm: GPT-2's lm_head has no bias (tied to the embedding), so "set the
    # final layer's bias" cannot be followed; the hockey stick is expected there. A warning
    # would fail gate=strict on a correct GPT-2: it is a pass that says so
    r = run_check("init_bias", tiny_gpt2, zipf_tokens())
    assert r.value >= 0.5  # the share alone would fail
    assert r.status == Status.PASS, r.message
    assert "(information)" in r.message
    assert "lm_head has no bias" in r.message and "tied to the token embedding" in r.message
    assert r.metrics["output_layer_has_bias"] == 0.0


def test_lm_head_with_a_bias_left_at_zero_still_fails():
    # planted bug: an untied lm_head with a bias, left at 0 under a strong token prior
    def biased_head() -> torch.nn.Module:
        model = tiny_gpt2()
        model.lm_head = torch.nn.Linear(32, V, bias=True)
        torch.nn.init.zeros_(model.lm_head.bias)
        torch.nn.init.normal_(model.lm_head.weight, std=0.02)
        return model

    r = run_check("init_bias", biased_head, zipf_tokens())
    assert r.status == Status.FAIL, r.message
    assert "(lm_head.bias)" in r.message


def test_a_mean_offset_set_by_unnormalised_inputs_warns_naming_their_scale():
    # the PyTorch tutorial's Linear(3, 1) on (x, x^2, x^3): the mean prediction at init is
    # W . mean(x) + b with mean(x^2) = 3.3, so setting the bias is not the fix (before: FAIL
    # "set the final layer's bias to [0.00998]")
    from test_loss_at_init import _linear, _poly

    r = run_check("init_bias", _linear, _poly())
    assert r.status == Status.WARN, r.message
    assert "the inputs are not standardised" in r.message and "set the final" not in r.message
