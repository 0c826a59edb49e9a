from pathlib import Path

import torch
import torch.nn.functional as F
from conftest import blobs, run_check
from torch import nn
from torch.utils.data import TensorDataset

from trackcheck import DataSpec, make_task
from trackcheck.checks._shared import _deps
from trackcheck.core import Status
from trackcheck.models import GPT, MLP
from trackcheck.models.gpt import CausalSelfAttention


class MaskedAttention(CausalSelfAttention):
    """Attention with an explicit mask: ``diagonal`` 0 is causal, 1 lets t see t+1 (the
    off-by-one bug), None is no mask at all (the missing-mask bug)."""

    def __init__(self, d_model: int, n_head: int, diagonal: int | None) -> None:
        super().__init__(d_model, n_head)
        self.diagonal = diagonal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask = None
        if self.diagonal is not None:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(self.diagonal)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


def tiny_gpt(mask_diagonal: int | None = 0, n_layer: int = 1):  # type: ignore[no-untyped-def]
    def build() -> GPT:
        model = GPT(96, 32, d_model=16, n_head=2, n_layer=n_layer)
        for block in model.blocks:
            block.attn = MaskedAttention(16, 2, mask_diagonal)
        return model

    return build


def test_gpt_passes(text_data):
    r = run_check("causality", lambda: GPT(96, 32, d_model=16, n_head=2, n_layer=1), text_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["max_future_leak"] == 0.0  # masked weights are exactly 0 after softmax
    assert r.metrics["self_dependent"] == 1.0
    assert Path(r.figures["gradient_map"]).is_file()


def test_explicit_causal_mask_passes(text_data):
    r = run_check("causality", tiny_gpt(mask_diagonal=0, n_layer=2), text_data)
    assert r.status == Status.PASS, r.message


def test_missing_causal_mask_fails(text_data):
    r = run_check("causality", tiny_gpt(mask_diagonal=None), text_data)
    assert r.status == Status.FAIL
    assert r.metrics["leaking_pairs"] == 32 * 31 / 2  # every s > t
    assert "causal mask is missing" in r.message


def test_off_by_one_mask_fails_naming_the_pairs(text_data):
    r = run_check("causality", tiny_gpt(mask_diagonal=1), text_data)
    assert r.status == Status.FAIL
    assert r.metrics["leaking_pairs"] == 31  # one layer: exactly the pairs (t, t + 1)
    assert "(t=0, s=1), (t=1, s=2)" in r.message
    assert "off by one" in r.message


def test_off_by_one_reach_grows_with_depth(text_data):
    r = run_check("causality", tiny_gpt(mask_diagonal=1, n_layer=2), text_data)
    assert r.status == Status.FAIL
    assert r.metrics["leaking_pairs"] == 31 + 30  # (t, t + 1) and (t, t + 2)
    assert "at most 2 position(s) ahead" in r.message


class HeadsTimeMixed(CausalSelfAttention):
    """Planted bug: the heads' outputs [B, nh, T, hs] reshaped to [B, T, C] without the
    transpose back: output position t reads the heads at times t * nh + j (mod T), so the
    leak reaches far ahead in a pattern, not as a band."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.reshape(B, T, C))


def test_a_leak_that_is_not_a_band_is_described_not_called_an_off_by_one_mask(text_data):
    def build() -> GPT:
        model = GPT(96, 32, d_model=16, n_head=2, n_layer=2)
        for block in model.blocks:
            block.attn = HeadsTimeMixed(16, 2)
        return model

    r = run_check("causality", build, text_data)
    assert r.status == Status.FAIL
    assert "off by one" not in r.message
    assert "not the full band" in r.message and "heads" in r.message


def test_skips_a_model_without_sequences():
    r = run_check("causality", lambda: MLP([8], 4), blobs())
    assert r.status == Status.SKIP
    assert "not an autoregressive model" in r.message


def test_skips_token_data_whose_output_has_no_time_axis():
    class Classifier(nn.Module):  # a bag of tokens -> class logits [B, C]
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(idx).mean(1))

    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 10, (64, 12), generator=g), torch.randint(0, 3, (64,), generator=g)
    data = DataSpec(
        train=TensorDataset(x, y),
        test=TensorDataset(x, y),
        task=make_task("multiclass", 3),
        kind="tokens",
    )
    r = run_check("causality", Classifier, data)
    assert r.status == Status.SKIP
    assert "no time axis" in r.message


def test_can_be_turned_off_for_a_bidirectional_model(text_data):
    r = run_check("causality", tiny_gpt(mask_diagonal=None), text_data, {"enabled": False})
    assert r.status == Status.SKIP


def test_charts_a_prefix_of_seq_len_positions(text_data):
    r = run_check("causality", tiny_gpt(mask_diagonal=1), text_data, {"seq_len": 8})
    assert r.metrics["seq_len"] == 8
    assert r.metrics["leaking_pairs"] == 7  # (t, t + 1) for t < 7


def test_map_charted_in_chunks_equals_the_map_in_one_go(text_data, monkeypatch):
    model = tiny_gpt(mask_diagonal=None)().eval()
    x, _ = text_data.head("test", 1)
    point = _deps.differentiable_input(model, model, x)
    whole = _deps.dependency_map(point, dim=1, seed=0)
    monkeypatch.setattr(_deps, "CHUNK_ELEMENTS", 5 * (x.numel() * (96 + 16)))  # 5 per chunk
    chunked = _deps.dependency_map(point, dim=1, seed=0)
    torch.testing.assert_close(chunked, whole)


class PadUnmaskingLM(nn.Module):
    """Causal attention over the keys ``attention_mask`` marks valid; a query with no valid
    key (a left-padded position) attends to every position instead, as Hugging Face's SDPA
    path once unmasked fully masked rows: the padded outputs see the future, the real ones
    do not."""

    causal = True  # False: the planted bug, no causal mask (padding still masked)

    def __init__(self, vocab: int = 96, d: int = 16) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.head = nn.Linear(d, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.tok(input_ids)  # [B, T, C]
        q, k, v = self.qkv(h).split(h.shape[-1], dim=2)
        t = h.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril(0 if self.causal else t)
        mask = causal & attention_mask.bool()[:, None, :]  # [B, T(query), T(key)]
        mask = mask | ~mask.any(-1, keepdim=True)  # rows with no valid key: every key
        return self.head(h + F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def left_padded_lm():  # type: ignore[no-untyped-def]
    from helpers.hf_models import lm_dicts  # dict items; imports transformers only to build models

    return lm_dicts(pad_every=1, padding_side="left")


def test_padded_positions_are_not_charted():
    r = run_check("causality", PadUnmaskingLM, left_padded_lm())
    assert r.status == Status.PASS, r.message
    assert r.metrics["padded_positions"] == 2  # the longest test sequence of the first 8
    assert "2 padded positions left out" in r.message


def test_a_missing_causal_mask_in_a_padded_sequence_fails_as_missing():
    class Bidirectional(PadUnmaskingLM):
        causal = False

    r = run_check("causality", Bidirectional, left_padded_lm())
    assert r.status == Status.FAIL
    assert r.metrics["leaking_pairs"] == 30 * 29 / 2  # every s > t among the 30 real ones
    assert "causal mask is missing" in r.message  # padded columns charted would read partial


def test_the_map_is_taken_at_the_token_table_when_a_position_table_is_called_first(text_data):
    class PositionsFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos = nn.Embedding(32, 16)
            self.gpt = GPT(96, 32, d_model=16, n_head=2, n_layer=1)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            p = self.pos(torch.arange(idx.shape[1], device=idx.device)[None])  # [1, T]: x's shape
            return self.gpt(idx) + 0 * p.sum()

    r = run_check("causality", PositionsFirst, text_data)
    assert r.status == Status.PASS, r.message
    assert "nn.Embedding 'gpt.tok'" in r.message


def test_a_tagger_is_skipped_as_bidirectional_by_design():
    from test_token_task import Tagger, tagger_data

    r = run_check("causality", Tagger, tagger_data("lm"))  # read as token classification
    assert r.status == Status.SKIP
    assert "bidirectional encoder is correct by design" in r.message
    assert "read as token classification" in r.message


def test_a_tagger_can_still_be_charted_when_forced():
    from test_token_task import Tagger, tagger_data

    r = run_check("causality", Tagger, tagger_data(), {"enabled": True})
    assert r.status == Status.FAIL  # it reads the whole sentence: every future position
    assert "causal mask is missing" in r.message


S_VOCAB, S_LEN = 12, 8


class Seq2Seq(nn.Module):
    """A GRU encoder reads the source whole; a GRU decoder starts from its state and is fed
    the targets by teacher forcing: a start token (0), then target t-1 at step t
    (``shift=False`` plants the bug: target t at step t, so output t reads its own target)."""

    def __init__(self, shift: bool = True) -> None:
        super().__init__()
        self.shift = shift
        self.src_emb, self.tgt_emb = nn.Embedding(S_VOCAB, 16), nn.Embedding(S_VOCAB, 16)
        self.enc, self.dec = nn.GRU(16, 16, batch_first=True), nn.GRU(16, 16, batch_first=True)
        self.out = nn.Linear(16, S_VOCAB)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        _, h = self.enc(self.src_emb(src))
        if self.shift:
            tgt = F.pad(tgt[:, :-1], (1, 0), value=0)
        return self.out(self.dec(self.tgt_emb(tgt), h)[0])  # [B, T, V]


def translation() -> DataSpec:
    g = torch.Generator().manual_seed(0)
    src = torch.randint(1, S_VOCAB, (64, S_LEN), generator=g)
    tgt = (src.flip(1) * 5) % (S_VOCAB - 1) + 1  # a made-up translation: reversed, mapped
    ds = TensorDataset(src, tgt, tgt)
    return DataSpec(ds, ds, make_task("lm", S_VOCAB), kind="tokens")


def test_an_encoder_decoder_is_charted_on_the_decoders_inputs_and_passes():
    r = run_check("causality", Seq2Seq, translation())
    assert r.status == Status.PASS, r.message  # the source is read whole: not charted
    assert "decoder's inputs" in r.message
    assert r.metrics["self_dependent"] == 0.0  # output t reads targets before t only


def test_a_decoder_fed_its_own_target_fails():
    r = run_check("causality", lambda: Seq2Seq(shift=False), translation())
    assert r.status == Status.FAIL
    assert r.metrics["leaking_pairs"] == S_LEN  # the diagonal: (t, t) for every t
    assert "reads its own target" in r.message
