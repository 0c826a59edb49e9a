"""Loss wiring that cannot train, from public bug studies, each with its fixed twin: the
loss's floor is judged on free outputs shaped like the model's (overfit_batch), and the
cause is named. Plus what "fit" means in overfit_batch: finite, bounded outputs, each
example predicted as its label."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import blobs, run_check
from helpers.models import ColumnHead
from torch import nn

from trackcheck.core import Status
from trackcheck.models import MLP


class Sigmoid(MLP):
    """Planted bug: a sigmoid at the end of a model trained with BCEWithLogitsLoss."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(super().forward(x))


def nll_on_logits(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(out, y)  # planted bug: nll_loss expects log-probabilities


def nll_on_log_probs(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(F.log_softmax(out, -1), y)


def mse_broadcast(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, y)  # planted bug: [B, 1] against [B] -> [B, B]


def mse_squeezed(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out.squeeze(-1), y)


def mlp() -> nn.Module:
    return MLP([8], 4, width=16)


def test_nll_loss_on_raw_logits_has_no_floor_and_is_named():
    r = run_check("overfit_batch", mlp, blobs(), loss=nll_on_logits)
    assert r.status == Status.FAIL
    assert "no floor" in r.message and "log_softmax" in r.message


def test_nll_loss_on_log_softmax_fits():
    assert run_check("overfit_batch", mlp, blobs(), loss=nll_on_log_probs).status == Status.PASS


def test_mse_that_broadcasts_inside_a_user_loss_fails_naming_the_shapes():
    r = run_check("overfit_batch", ColumnHead, blobs("regression"), loss=mse_broadcast)
    assert r.status == Status.FAIL
    assert "[4, 1]" in r.message and "[B, B]" in r.message


def test_mse_on_the_squeezed_output_fits():
    r = run_check("overfit_batch", ColumnHead, blobs("regression"), loss=mse_squeezed)
    assert r.status == Status.PASS, r.message


def test_bce_with_logits_after_a_sigmoid_is_named_by_the_contract():
    r = run_check("contract", lambda: Sigmoid([8], 1, width=16), blobs("binary"))
    assert r.status == Status.FAIL and "sigmoid" in r.message


def test_bce_with_logits_on_logits_passes_the_contract():
    r = run_check("contract", lambda: MLP([8], 1, width=16), blobs("binary"))
    assert r.status == Status.PASS, r.message


def test_a_fit_whose_outputs_exploded_is_no_fit():
    # Adam at lr 1e3 reaches loss 0 on 4 examples in a few steps, with logits of 1e13
    r = run_check("overfit_batch", mlp, blobs(), optimizer=lambda ps: torch.optim.Adam(ps, lr=1e3))
    assert r.status == Status.FAIL
    assert "beyond any use" in r.message and "lr 1e+03" in r.message
