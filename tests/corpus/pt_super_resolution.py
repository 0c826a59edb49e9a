"""pytorch/examples super_resolution: conv 5x5 (64), conv 3x3 (64), conv 3x3 (32), conv 3x3 to
upscale^2 channels, ReLU between, pixel_shuffle; orthogonal init (gain for ReLU); nn.MSELoss
on the high-resolution Y channel; Adam at lr 0.01 (its default), batch 64 (its default).

Tiny: 16, 16, 8 channels, 8x8 inputs upsampled x2 to 16x16 digits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init

from ._data import digits, tensor_spec

SOURCE = "https://github.com/pytorch/examples/tree/main/super_resolution"
GLUE = ""


class Net(nn.Module):
    def __init__(self, upscale_factor: int = 2) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(1, 16, (5, 5), (1, 1), (2, 2))
        self.conv2 = nn.Conv2d(16, 16, (3, 3), (1, 1), (1, 1))
        self.conv3 = nn.Conv2d(16, 8, (3, 3), (1, 1), (1, 1))
        self.conv4 = nn.Conv2d(8, upscale_factor**2, (3, 3), (1, 1), (1, 1))
        self.pixel_shuffle = nn.PixelShuffle(upscale_factor)
        init.orthogonal_(self.conv1.weight, init.calculate_gain("relu"))
        init.orthogonal_(self.conv2.weight, init.calculate_gain("relu"))
        init.orthogonal_(self.conv3.weight, init.calculate_gain("relu"))
        init.orthogonal_(self.conv4.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        x = self.relu(self.conv3(x))
        return self.pixel_shuffle(self.conv4(x))


def program() -> dict[str, Any]:
    hr_tr, _, hr_te, _ = digits(16)
    lr_tr = F.interpolate(hr_tr, size=(8, 8), mode="bicubic", align_corners=False)
    lr_te = F.interpolate(hr_te, size=(8, 8), mode="bicubic", align_corners=False)
    return {
        "model": Net,
        "data": tensor_spec(lr_tr, hr_tr, lr_te, hr_te, "regression", 1, "image", 64),
        "optimizer": lambda p: torch.optim.Adam(p, lr=0.01),
        "loss": nn.MSELoss(),
    }
