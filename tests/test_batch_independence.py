from pathlib import Path

import torch
from conftest import blobs, run_check
from torch import nn

from trackcheck.core import Status
from trackcheck.models import GPT, MLP, ResNet


class BatchMean(MLP):
    """Planted bug: inputs centred on the batch mean in forward (a batch statistic)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x - x.mean(0, keepdim=True))


class ViewMix(nn.Module):
    """Planted bug: a 1x1 convolution written as a channels-first matmul, with ``view`` where
    ``permute`` was meant, so each "channel" row holds pieces of several examples."""

    def __init__(self, c: int = 4, n_out: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.mix = nn.Parameter(torch.randn(c, c) / c**0.5)
        self.head = nn.Linear(c, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # [B, C, H, W]
        b, c, hh, ww = h.shape
        hc = h.view(c, b * hh * ww)  # meant: h.permute(1, 0, 2, 3).reshape(c, -1)
        h = (self.mix @ hc).view(b, c, hh, ww)  # meant: .view(c, b, hh, ww).permute(1, 0, 2, 3)
        return self.head(h.relu().mean((2, 3)))


class Normed(nn.Module):
    """LayerNorm and GroupNorm used correctly (per example), or GroupNorm fed a ``view`` that
    folds the batch into its normalised axes (the planted bug)."""

    def __init__(self, d: int = 8, hidden: int = 16, n_out: int = 4, buggy: bool = False):
        super().__init__()
        self.fc = nn.Linear(d, hidden)
        self.ln = nn.LayerNorm(hidden)
        self.gn = nn.GroupNorm(4, hidden)
        self.head = nn.Linear(hidden, n_out)
        self.buggy = buggy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.fc(x))  # [B, hidden]
        if self.buggy:  # meant: self.gn(h) ([B, hidden] is [N, C] already)
            h = self.gn(h.view(1, h.shape[1], -1)).view(h.shape)  # [1, hidden, B]
        else:
            h = self.gn(h)
        return self.head(h.relu())


def tiny_gpt(vocab: int = 96, block: int = 32) -> GPT:
    return GPT(vocab, block, d_model=16, n_head=2, n_layer=1)


def test_resnet_with_batchnorm_passes_in_eval_mode(digits_data):
    r = run_check("batch_independence", lambda: ResNet([1, 8, 8], 10, width=4), digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["max_leak"] == 0.0  # no path between examples: exactly zero
    assert "BatchNorm" in r.message and "eval mode" in r.message


def test_mlp_passes():
    r = run_check("batch_independence", lambda: MLP([8], 4), blobs())
    assert r.status == Status.PASS, r.message


def test_logs_the_gradient_map_as_a_picture():
    r = run_check("batch_independence", lambda: MLP([8], 4), blobs(), {"n_examples": 4})
    assert Path(r.figures["gradient_map"]).is_file()
    assert r.metrics["examples"] == 4


def test_gpt_passes_with_gradients_at_the_embedding_output(text_data):
    r = run_check("batch_independence", tiny_gpt, text_data, {"n_examples": 4})
    assert r.status == Status.PASS, r.message
    assert "nn.Embedding 'tok'" in r.message


def test_layernorm_and_groupnorm_used_per_example_pass():
    r = run_check("batch_independence", Normed, blobs())
    assert r.status == Status.PASS, r.message


def test_groupnorm_fed_the_batch_axis_fails():
    # the norm layers stay in the model as they are: a misuse is not hidden
    r = run_check("batch_independence", lambda: Normed(buggy=True), blobs())
    assert r.status == Status.FAIL
    assert "mix across the batch" in r.message


def test_batch_mean_in_forward_fails():
    r = run_check("batch_independence", lambda: BatchMean([8], 4), blobs())
    assert r.status == Status.FAIL
    # x - mean over B = 8 examples: the cross-example Jacobian is -1/8 of the identity
    # against 7/8 on the diagonal, so leaks are of order 1/7, far above float32's 1.2e-7
    assert r.metrics["max_leak"] > 1e-2
    assert "(0, 1)" in r.message


def test_view_instead_of_permute_fails(digits_data):
    r = run_check("batch_independence", ViewMix, digits_data)
    assert r.status == Status.FAIL
    assert "permute" in r.message


def test_batch_mixing_after_the_embedding_fails(text_data):
    class EmbeddingBatchMean(GPT):
        def forward_embedded(self, h: torch.Tensor) -> torch.Tensor:
            return super().forward_embedded(h - h.mean(0, keepdim=True))

    r = run_check(
        "batch_independence",
        lambda: EmbeddingBatchMean(96, 32, d_model=16, n_head=2, n_layer=1),
        text_data,
        {"n_examples": 4},
    )
    assert r.status == Status.FAIL
    assert r.metrics["leaking_pairs"] == 12  # every (i, j != i) of 4 examples


def test_input_cut_from_the_graph_fails():
    class Detached(MLP):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x.detach())

    r = run_check("batch_independence", lambda: Detached([8], 4), blobs())
    assert r.status == Status.FAIL
    assert "no output depends" in r.message


def test_integer_inputs_without_an_embedding_module_skip(text_data):
    class OneHot(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(96, 96)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.fc(nn.functional.one_hot(idx, 96).float())

    r = run_check("batch_independence", OneHot, text_data)
    assert r.status == Status.SKIP
    assert "nn.Embedding" in r.message


def test_dict_inputs_are_counted_on_the_target():
    from helpers.hf_models import digit_pixels  # {"pixel_values", "labels"} items

    class PixelMLP(MLP):
        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return super().forward(pixel_values)

    r = run_check("batch_independence", lambda: PixelMLP([1, 16, 16], 10), digit_pixels())
    assert r.status == Status.PASS, r.message  # not "the data has 1" (the dict's one key)
    assert r.metrics["examples"] == 8
