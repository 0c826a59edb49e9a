from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trackcheck.models._init import set_output_bias


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet for small images (8x8 to 32x32): 3x3 stem, no max-pool, one block per stage.

    ``width`` channels in the first stage, doubled (with stride 2) at each later stage.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        width: int = 16,
        stages: int = 2,
        out_bias: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        c = in_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        blocks, w = [], width
        for s in range(stages):
            w_out = width * 2**s
            blocks.append(BasicBlock(w, w_out, stride=1 if s == 0 else 2))
            w = w_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(w, out_features)
        # pooled ReLU features have a positive mean, so default-size head weights shift the
        # mean prediction away from the bias; small weights keep it at the prior at init
        nn.init.normal_(self.head.weight, std=0.01)
        set_output_bias(self.head, out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))  # [B, W, H', W']
        out = self.head(h.mean(dim=(2, 3)))  # global average pool -> [B, out_features]
        return out.squeeze(-1) if out.shape[-1] == 1 else out
