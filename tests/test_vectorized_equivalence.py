import torch
from conftest import blobs, run_check
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch import nn

from trackcheck.cli import register_configs
from trackcheck.core import Status
from trackcheck.models import GPT, MLP, ResNet


def loop_reference(model: nn.Module, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A user's loopy reference: one example at a time (``scale`` != 1 plants a bug in it)."""
    return torch.cat([model(x[i : i + 1]) for i in range(len(x))]) * scale


class BatchMean(MLP):
    """Planted bug: a batch statistic in forward, active in eval mode too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x - x.mean(0, keepdim=True))


class BatchSoftmax(MLP):
    """Planted bug: outputs normalised over the batch axis (softmax(0) where -1 was meant)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(0)


class SqueezeAll(MLP):
    """Planted bug: ``squeeze()`` without a dim drops the batch axis at batch size 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze()


class RoundingNoise(MLP):
    """Correct maths, but the batched path rounds differently (as another kernel would): a
    relative perturbation of 5e-5, outside torch.testing's float32 tolerance for outputs
    near 3 (1e-5 + 1.3e-6 * 3) but the size of rounding in a deep float32 net."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * (1 + 5e-5) if len(x) > 1 else out


def test_resnet_passes(digits_data):
    r = run_check("vectorized_equivalence", lambda: ResNet([1, 8, 8], 10, width=4), digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["loop_tolerance_ratio"] <= 1.0


def test_mlp_passes():
    r = run_check("vectorized_equivalence", lambda: MLP([8], 4), blobs())
    assert r.status == Status.PASS, r.message
    assert r.tables["per_example"]["rows"][0][0] == 0


def test_gpt_passes(text_data):
    r = run_check(
        "vectorized_equivalence", lambda: GPT(96, 32, d_model=16, n_head=2, n_layer=1), text_data
    )
    assert r.status == Status.PASS, r.message


def test_batch_mean_in_eval_mode_fails():
    r = run_check("vectorized_equivalence", lambda: BatchMean([8], 4), blobs())
    assert r.status == Status.FAIL
    assert "Greatest absolute difference" in r.message  # torch.testing's mismatch report
    assert r.metrics["loop_normwise_diff"] > 0.1


def test_outputs_normalised_over_the_batch_fail():
    r = run_check("vectorized_equivalence", lambda: BatchSoftmax([8], 4), blobs())
    assert r.status == Status.FAIL


def test_squeeze_dropping_the_batch_axis_fails_on_shape():
    r = run_check("vectorized_equivalence", lambda: SqueezeAll([8], 4), blobs())
    assert r.status == Status.FAIL
    assert "squeeze()" in r.message


def test_rounding_sized_difference_warns():
    r = run_check("vectorized_equivalence", lambda: RoundingNoise([8], 4, out_bias=3.0), blobs())
    assert r.status == Status.WARN, r.message
    assert 1.0 < r.metrics["loop_tolerance_ratio"]
    assert r.metrics["loop_normwise_diff"] <= 100 * 1.3e-6


def test_matching_reference_passes():
    r = run_check(
        "vectorized_equivalence", lambda: MLP([8], 4), blobs(), reference_fn=loop_reference
    )
    assert r.status == Status.PASS, r.message
    assert r.metrics["reference_max_abs_diff"] <= 1e-5


def test_disagreeing_reference_fails():
    r = run_check(
        "vectorized_equivalence",
        lambda: MLP([8], 4),
        blobs(),
        reference_fn=lambda m, x: loop_reference(m, x, scale=1.01),
    )
    assert r.status == Status.FAIL
    assert "reference implementation" in r.message


def test_reference_is_configured_at_the_top_level_reference_key():
    register_configs()
    target = f"{__name__}.loop_reference"
    with initialize_config_module("trackcheck.conf", version_base="1.3"):
        cfg = compose(
            "config", overrides=["+model=mlp", f"reference={{_target_:{target},_partial_:true}}"]
        )
    fn = instantiate(cfg.reference)
    x = torch.randn(3, 8)
    model = MLP([8], 4)
    assert torch.equal(fn(model, x), loop_reference(model, x))


class SamplingVAE(nn.Module):
    """pytorch/examples' VAE in miniature: the forward samples z = mu + eps * std with
    eps = randn_like(std) in eval mode too, as the original does at test time."""

    def __init__(self, d: int = 8, latent: int = 2, mix: bool = False) -> None:
        super().__init__()
        self.enc, self.dec, self.mix = nn.Linear(d, 2 * latent), nn.Linear(latent, 4), mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mix:  # planted bug: a batch statistic in forward
            x = x - x.mean(0, keepdim=True)
        mu, logvar = self.enc(x).chunk(2, -1)
        std = torch.exp(0.5 * logvar)
        return self.dec(mu + torch.randn_like(std) * std)


def test_a_forward_that_samples_is_skipped_with_the_reason():
    r = run_check("vectorized_equivalence", SamplingVAE, blobs())
    assert r.status == Status.SKIP, r.message
    assert "the forward is random in eval mode" in r.message


def test_batch_mixing_in_a_forward_that_samples_is_caught_by_batch_independence():
    r = run_check("batch_independence", lambda: SamplingVAE(mix=True), blobs())
    assert r.status == Status.FAIL, r.message
    assert run_check("batch_independence", SamplingVAE, blobs()).status == Status.PASS
