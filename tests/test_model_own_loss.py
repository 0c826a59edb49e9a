"""A model whose forward takes the targets and computes its own loss, nanoGPT's way, with
``loss="model"`` and no wrapper: ``forward(idx, targets=None)`` returning ``(logits, loss)``,
and the last position's logits alone when ``targets`` is None (its generation path).

The model is nanoGPT's ``model.py`` shape (token and position embeddings in a
``transformer`` ModuleDict, causal self-attention with a ``tril`` mask buffer, pre-LayerNorm
blocks, the head tied to the token embedding, the parameter count printed at init), tiny and
randomly initialised.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import trackcheck
from trackcheck import DataSpec, Report, Status
from trackcheck.data.text import VOCAB
from trackcheck.pipeline import Pipeline, PipelineError

BAD = (Status.FAIL, Status.ERROR)
SEQ_LEN = 32


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, causal: bool = True) -> None:
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head, self.n_embd = n_head, n_embd
        mask = torch.tril(torch.ones(block_size, block_size))
        if not causal:  # the planted bug: every position attends to the future too
            mask = torch.ones(block_size, block_size)
        self.register_buffer("bias", mask.view(1, 1, block_size, block_size))

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # [B, nh, T, hs]
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # [B, nh, T, T]
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v  # [B, nh, T, hs]
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, causal: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, causal)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """nanoGPT's GPT, tiny; ``causal=False`` plants a missing causal mask,
    ``reduction="sum"`` a loss summed over the batch's tokens."""

    def __init__(
        self,
        vocab_size: int = len(VOCAB),
        block_size: int = SEQ_LEN,
        n_layer: int = 2,
        n_head: int = 4,
        n_embd: int = 32,
        causal: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.block_size, self.reduction = block_size, reduction
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(vocab_size, n_embd),
                wpe=nn.Embedding(block_size, n_embd),
                h=nn.ModuleList(Block(n_embd, n_head, block_size, causal) for _ in range(n_layer)),
                ln_f=nn.LayerNorm(n_embd),
            )
        )
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        print(f"number of parameters: {sum(p.numel() for p in self.parameters()) / 1e6:.2f}M")

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Any]:
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)  # [B, T, V]
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)),
                targets.view(-1),
                ignore_index=-1,
                reduction=self.reduction,
            )
        else:  # inference-time mini-optimization: only the last position
            logits = self.lm_head(x[:, [-1], :])  # [B, 1, V]
            loss = None
        return logits, loss


def run(data: DataSpec, factory: Any = NanoGPT, **kwargs: Any) -> Report:
    kwargs.setdefault("seed", 0)
    return trackcheck.run(factory, data, loss="model", tracker=None, progress=False, **kwargs)


def test_its_loss_and_every_positions_logits_are_read_without_a_wrapper(
    text_data: DataSpec,
) -> None:
    pipe = Pipeline(loss="model", task_name="lm")
    x, y = pipe.split(text_data.head("train", 4))
    model = NanoGPT()
    raw = pipe.call_with_targets(model, x, y)  # targets= found from the signature
    assert raw[0].shape == (4, SEQ_LEN, len(VOCAB)) and raw[1].ndim == 0
    # without targets the model cuts to the last position: trackcheck reads every position
    assert pipe.forward(model, x).shape == (4, SEQ_LEN, len(VOCAB))
    assert torch.allclose(pipe.forward(model, x), raw[0])


def test_clean_model_passes_the_checklist(
    text_data: DataSpec, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run(text_data)
    bad = [c for c in report.checks if c.status in BAD]
    assert not bad, "\n".join(f"{c.name} {c.status}: {c.message}" for c in bad)
    assert report["overfit_batch"].status == Status.PASS
    # its print at init shows once, not once per fresh model
    assert capsys.readouterr().out.count("number of parameters") == 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_clean_model_passes_the_checklist_on_other_seeds(text_data: DataSpec, seed: int) -> None:
    report = run(text_data, seed=seed)
    bad = [c for c in report.checks if c.status in BAD]
    assert not bad, "\n".join(f"{c.name} {c.status}: {c.message}" for c in bad)


def test_missing_causal_mask_fails_causality(text_data: DataSpec) -> None:
    report = run(text_data, factory=lambda: NanoGPT(causal=False), checks=["causality"])
    assert report["causality"].status == Status.FAIL


def test_loss_summed_inside_the_forward_is_named_by_the_contract(text_data: DataSpec) -> None:
    report = run(text_data, factory=lambda: NanoGPT(reduction="sum"), checks=["contract"])
    assert report["contract"].status == Status.WARN
    assert "the loss grows with the batch" in report["contract"].message


def test_forward_without_a_targets_argument_is_one_clear_error(text_data: DataSpec) -> None:
    pipe = Pipeline(loss="model", task_name="lm")
    x, y = pipe.split(text_data.head("train", 2))
    with pytest.raises(PipelineError, match="takes no targets"):
        pipe.call_with_targets(nn.Embedding(len(VOCAB), 4), x, y)
