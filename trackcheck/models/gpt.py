from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trackcheck.models._init import set_output_bias


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # [B, T, C] -> [B, nh, T, hs]
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, nh, T, hs]
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A tiny causal transformer (pre-LayerNorm, learned positions), nanoGPT-style."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        d_model: int = 64,
        n_head: int = 4,
        n_layer: int = 2,
        out_bias: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, n_head) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        for m in self.modules():  # GPT-2 init: small weights keep the logits near zero at init
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        set_output_bias(self.head, out_bias)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> embeddings [B, T, C]; split out so dependency checks can
        take gradients at the embedding output (ids are integers and have none)."""
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence length {T} > block_size {self.block_size}")
        return self.tok(idx) + self.pos(torch.arange(T, device=idx.device))

    def forward_embedded(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(self.blocks(h)))  # [B, T, vocab]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embed(idx))
