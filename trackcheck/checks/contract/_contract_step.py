"""The contract check's probes of the user's training step (pipeline.step): three calls on
two batches, each returning a finite loss; the second leaves that batch's gradient only
(it clears the old one) and every forward runs in train mode."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trackcheck.checks._shared._park import HOST, move
from trackcheck.checks.contract._contract_findings import Findings, Thresholds, map_tensors
from trackcheck.context import Context
from trackcheck.pipeline import Batch


def check_step(ctx: Context, f: Findings, p: Thresholds, seed_offset: int) -> None:
    """Two calls on two batches (the stream ``seed_offset``): a finite loss each, the second
    leaves that batch's gradient only (compared with the same call on a copy whose .grad was
    cleared), train mode."""
    model = ctx.new_model()
    model.train()
    opt = ctx.optimizer(model)
    batches = ctx.train_batches(seed_offset=seed_offset)
    b1, b2 = next(batches), next(batches)
    raw = _loss_grad_norm(ctx, model, b1)  # before the hook below: not one of the step's
    modes: list[bool] = []  # module.training at each forward the step runs
    model.register_forward_pre_hook(lambda m, _args: modes.append(m.training))
    # the gradient norm each optimizer.step() the step calls used, read after it: a closure
    # step (Lightning's) computes the gradient inside step(), where a pre-hook sees none
    stepped: list[float] = []
    hook = opt.register_step_post_hook(lambda *_: stepped.append(_norm(_grads(model))))
    before = [q.detach().clone() for q in model.parameters()]
    ran_first = _run_step(ctx, model, b1, opt, f, "first") is not None
    hook.remove()
    if not ran_first:
        return
    if stepped and raw > 0:
        f.metrics["step_grad_scale"] = stepped[0] / raw
    moved_first = _moved(model, before)
    g_prev = _grads(model)
    move(HOST, model, opt)  # the copy trains alone on the device (checks/_shared/_park.py)
    fresh = move(ctx.device, copy.deepcopy(model))  # the hook comes along: forwards recorded
    for q in fresh.parameters():
        q.grad = None
    state = _rng_state(ctx)  # both second calls draw the same dropout masks
    ran = _run_step(ctx, fresh, b2, ctx.optimizer(fresh), f, "second") is not None
    g_fresh = _grads(fresh)
    del fresh
    move(ctx.device, model, opt)
    if not ran:
        return
    _set_rng_state(ctx, state)
    if _run_step(ctx, model, b2, opt, f, "second") is None:
        return
    _judge_grads(f, p, g_prev, g_fresh, _grads(model), moved_first)
    if not _moved(model, before):
        f.warn(
            "two calls of the training step left every parameter unchanged: does it call "
            "optimizer.step()?"
        )
    _judge_modes(f, model, modes)


def _run_step(
    ctx: Context,
    model: nn.Module,
    b: Batch,
    opt: torch.optim.Optimizer,
    f: Findings,
    which: str,
) -> float | None:
    try:  # the step gets its own copy of the batch: steps that pop keys or edit in place
        v = ctx.train_step(model, Batch(b.x, b.y, map_tensors(Tensor.clone, b.raw)), opt)
    except Exception as e:  # noqa: BLE001 - the user's code: its failure is the finding
        if isinstance(e, TypeError) and "NoneType" in str(e):
            f.fail(
                f"the training step (pipeline.step) returned None on its {which} call: "
                "return the batch's loss"
            )
        else:
            f.fail(
                f"the training step (pipeline.step) raised on its {which} call: "
                f"{type(e).__name__}: {e}"
            )
        return None
    if not math.isfinite(v):
        f.fail(f"the training step returned {v} on its {which} call: a finite loss expected")
        return None
    return v


def _loss_grad_norm(ctx: Context, model: nn.Module, b: Batch) -> float:
    """The norm of the loss's gradient on ``b`` at the current weights, as the step's own
    forward would compute it (the random state and the buffers are restored after, .grad is
    cleared): what an optimizer step that does not touch the gradient steps with."""
    state = _rng_state(ctx)
    buffers = [t.detach().clone() for t in model.buffers()]
    try:
        loss, _ = ctx.batch_loss(model, b)
        loss.backward()
        return _norm(_grads(model))
    except Exception:  # noqa: BLE001 - the step's own call reports what breaks
        return 0.0
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for t, v in zip(model.buffers(), buffers, strict=True):
                t.copy_(v)
        _set_rng_state(ctx, state)


def _grads(model: nn.Module) -> list[Tensor]:
    return [
        q.grad.detach().clone() if q.grad is not None else torch.zeros_like(q)
        for q in model.parameters()
    ]


def _moved(model: nn.Module, before: list[Tensor]) -> bool:
    return any(
        not torch.equal(q.detach(), b) for q, b in zip(model.parameters(), before, strict=True)
    )


def _norm(ts: list[Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in ts))


def _judge_grads(
    f: Findings,
    p: Thresholds,
    g_prev: list[Tensor],
    g_clean: list[Tensor],
    g_cont: list[Tensor],
    moved_first: bool,
) -> None:
    """.grad after the second call against the same call on a cleared copy."""
    n_clean, n_prev = _norm(g_clean), _norm(g_prev)
    if n_clean == 0 and _norm(g_cont) == 0:
        f.note("The training step leaves .grad empty (zero_grad after stepping): fine.")
        return
    diff = _norm([c - k for c, k in zip(g_cont, g_clean, strict=True)])
    rel = diff / max(n_clean, _norm(g_cont))  # relative to the larger: finite when one is 0
    acc = [c - k - q for c, k, q in zip(g_cont, g_clean, g_prev, strict=True)]
    rel_acc = _norm(acc) / max(n_prev, 1e-30) if n_prev > 0 else float("inf")
    f.metrics.update(step_grad_error=rel, step_grad_accumulation_error=rel_acc)
    if rel <= p.grad_rtol:
        return
    if rel_acc <= p.grad_rtol:
        msg = (
            f"after the training step's second call .grad holds the first batch's gradient "
            f"plus the second's (within {rel_acc:.2g}), not the second's alone (off by "
            f"{rel:.3g} of its norm): the step does not clear the gradients"
        )
        if moved_first:
            f.fail(msg + ". Call optimizer.zero_grad() before loss.backward()")
        else:
            f.warn(
                msg + " and did not update the parameters on its first call: gradient "
                "accumulation on purpose? trackcheck counts each call as one step"
            )
    else:
        f.warn(
            f"the gradient the training step leaves depends on what ran before: "
            f"{diff:.3g} away from what the same call leaves on a copy with cleared .grad "
            f"({n_clean:.3g} there; state kept in the step: a counter, a gradient scaler?)"
        )


def _judge_modes(f: Findings, model: nn.Module, modes: list[bool]) -> None:
    if not modes:
        f.note("The training step never called the model (no forward pass was seen).")
        return
    evals = modes.count(False)
    f.metrics["step_forwards_in_eval"] = float(evals)
    if not evals:
        return
    dependent = [
        type(m).__name__
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        or (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0)
    ]
    msg = (
        f"{evals} of the training step's {len(modes)} forward passes ran in eval mode: the "
        "step calls model.eval() (or leaves the model there)"
    )
    if dependent:
        f.fail(
            msg + f", so its {dependent[0]} layers train as at inference (dropout off, "
            "BatchNorm on running statistics). Call model.train() at the start of the step"
        )
    else:
        f.warn(
            msg + "; this model has no dropout or BatchNorm, so it makes no difference yet. "
            "Call model.train() at the start of the step"
        )


def _rng_state(ctx: Context) -> tuple[Any, ...]:
    cuda = torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _set_rng_state(ctx: Context, state: tuple[Any, ...]) -> None:
    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.set_rng_state(state[2])
    if state[3] is not None:
        torch.cuda.set_rng_state(state[3], ctx.device)
