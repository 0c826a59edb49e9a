"""A model that waits for its turn (input_independent's baseline, the contract's copy) waits
in host memory with its gradients and optimizer state: one model on the device at a time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trackcheck.checks._shared._park import on_device


def trained() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(8, 3)).square().mean().backward()
    opt.step()  # Adam's state exists now: step, exp_avg, exp_avg_sq per parameter
    return model, opt


def test_on_the_cpu_parking_changes_nothing():
    model, opt = trained()
    before = [q.detach().clone() for q in model.parameters()]
    with on_device(torch.device("cpu"), model, opt):
        pass
    for q, b in zip(model.parameters(), before, strict=True):
        assert q.device.type == "cpu"
        torch.testing.assert_close(q, b, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_parked_model_trains_on_where_it_left_off():
    model, opt = trained()
    reference = [q.detach().clone() for q in model.parameters()]
    params = list(model.parameters())
    with on_device(torch.device("cuda"), model, opt):
        assert all(q.device.type == "cuda" and q.grad.device.type == "cuda" for q in params)
        for state in opt.state.values():
            assert state["exp_avg"].device.type == "cuda"
            assert state["step"].device.type == "cpu"  # Adam keeps it on the host
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))  # same objects
    assert all(q.device.type == "cpu" for q in params)  # parked after the block
    opt.step()  # the same gradients and state again: a valid step on the host
    assert not torch.equal(next(model.parameters()), reference[0])
