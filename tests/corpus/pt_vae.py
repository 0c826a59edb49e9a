"""pytorch/examples vae/main.py: fc 784-400-(20, 20), reparameterised z, fc 20-400-784 with a
sigmoid output; the loss is binary_cross_entropy(recon, x, reduction='sum') plus the KL term
on (mu, logvar); Adam at lr 1e-3, batch 128; pixels in [0, 1].

Tiny: 16x16 digits (256 pixels), hidden 64, latent 8. The loss takes the model's whole
output (``pipeline.loss_takes="whole"``, a documented setting), and the original's loop
(zero_grad, forward, loss_function, backward, step) is trackcheck's default step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trackcheck.pipeline import Pipeline

from ._data import digits, tensor_spec

SOURCE = "https://github.com/pytorch/examples/blob/main/vae/main.py"
GLUE = (
    "the target is the input itself: the dataset yields (x, x), where the original's loss "
    "reads the batch's data and ignores its labels."
)
D = 256


class VAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(D, 64)
        self.fc21 = nn.Linear(64, 8)
        self.fc22 = nn.Linear(64, 8)
        self.fc3 = nn.Linear(8, 64)
        self.fc4 = nn.Linear(64, D)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x.view(-1, D))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(
    recon_x: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    bce = F.binary_cross_entropy(recon_x, x.view(-1, D), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def vae_loss(out: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
    """The original's loss_function, as a loss of the model's whole output and the target."""
    recon_batch, mu, logvar = out
    return loss_function(recon_batch, x, mu, logvar)


def program() -> dict[str, Any]:
    xtr, _, xte, _ = digits(16)
    xtr, xte = xtr.reshape(len(xtr), D), xte.reshape(len(xte), D)
    return {
        "model": VAE,
        "data": tensor_spec(xtr, xtr, xte, xte, "regression", 1, "tabular", 128),
        "optimizer": lambda p: torch.optim.Adam(p, lr=1e-3),
        "loss": vae_loss,
        "pipeline": Pipeline(loss_takes="whole"),
    }
