"""Sequence-first models (``pipeline.batch_first=false``): the model reads [T, B] and returns
[T, B, V] or [T*B, V]; the checks see [B, T, V], and the dependency maps run on it."""

import pytest
import torch
from conftest import run_check
from torch import nn

from trackcheck import Pipeline
from trackcheck.context import Context
from trackcheck.core import Status
from trackcheck.pipeline import PipelineError


class SeqFirstLM(nn.Module):
    """PyTorch's word-language-model Transformer in small: ids [T, B] -> log-probs [T, B, V]
    (``flat``: [T*B, V], as its RNN model returns them); ``causal=False`` plants a missing
    mask."""

    def __init__(self, vocab: int = 96, causal: bool = True, flat: bool = False) -> None:
        super().__init__()
        self.causal, self.flat = causal, flat
        self.emb = nn.Embedding(vocab, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)  # batch_first=False
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.decoder = nn.Linear(16, vocab)

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        t = src.shape[0]
        mask = nn.Transformer.generate_square_subsequent_mask(t) if self.causal else None
        out = self.decoder(self.encoder(self.emb(src), mask=mask, is_causal=self.causal))
        out = out.log_softmax(-1)
        return out.reshape(-1, out.shape[-1]) if self.flat else out


SEQ_FIRST = Pipeline(batch_first=False)


@pytest.mark.parametrize("flat", [False, True])
def test_outputs_are_read_back_batch_first(text_data, flat):
    ctx = Context(lambda: SeqFirstLM(flat=flat), text_data, torch.optim.Adam, pipeline=SEQ_FIRST)
    model = ctx.new_model().eval()
    x = ctx.head("train", 4).x  # [4, 32] as the loader stacks windows
    out = ctx.forward(model, x)
    assert out.shape == (4, 32, 96)
    expected = SeqFirstLM.forward(model, x.t()).reshape(32, 4, 96).transpose(0, 1)
    assert torch.allclose(out, expected)


def test_an_output_in_neither_layout_is_one_line_saying_what_was_expected(text_data):
    ctx = Context(lambda: SeqFirstLM(), text_data, torch.optim.Adam, pipeline=SEQ_FIRST)
    model = ctx.new_model()
    with pytest.raises(PipelineError, match=r"expected \[32, 4, \.\.\.\] or \[128, \.\.\.\]"):
        ctx.pipeline.prediction(torch.zeros(5, 96), ctx.head("train", 4).x)
    assert ctx.forward(model, ctx.head("train", 4).x).shape[:2] == (4, 32)


def test_a_training_step_gets_the_batch_sequence_first(text_data):
    seen = []

    def step(model, batch, opt):  # type: ignore[no-untyped-def]
        seen.append(batch[0].shape)
        opt.zero_grad()
        loss = model(batch[0]).mean()
        loss.backward()
        opt.step()
        return loss

    ctx = Context(SeqFirstLM, text_data, torch.optim.Adam, pipeline=Pipeline(batch_first=False))
    ctx.pipeline.step = step
    ctx.train_step(ctx.new_model(), next(ctx.train_batches()), ctx.optimizer(ctx.new_model()))
    assert seen == [torch.Size([32, text_data.batch_size])]


def test_causality_and_batch_independence_run_on_a_sequence_first_model(text_data):
    for check in ("causality", "batch_independence"):
        r = run_check(check, SeqFirstLM, text_data, pipeline=SEQ_FIRST)
        assert r.status == Status.PASS, (check, r.message)


def test_a_missing_causal_mask_in_a_sequence_first_model_is_caught(text_data):
    r = run_check("causality", lambda: SeqFirstLM(causal=False), text_data, pipeline=SEQ_FIRST)
    assert r.status == Status.FAIL
    assert "causal mask is missing" in r.message


class MixesTheBatch(SeqFirstLM):
    def forward(self, src: torch.Tensor) -> torch.Tensor:
        out = super().forward(src)  # [T, B, V]
        return out - out.mean(1, keepdim=True)  # a mean over dim 1: the batch, sequence-first


def test_a_sequence_first_model_mixing_the_batch_is_caught(text_data):
    r = run_check("batch_independence", MixesTheBatch, text_data, pipeline=SEQ_FIRST)
    assert r.status == Status.FAIL, r.message


def test_hydra_config_sets_it():
    from omegaconf import OmegaConf

    from trackcheck.config import PipelineConfig

    node = OmegaConf.merge(OmegaConf.structured(PipelineConfig), {"batch_first": False})
    assert Pipeline(**OmegaConf.to_container(node)).batch_first is False  # type: ignore[arg-type]
