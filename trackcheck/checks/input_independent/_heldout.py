"""input_independent's data: the blanked inputs, and the held-out sets that judge its two
models (the test split and a slice of the training split that neither model trains on; the
check's module docstring says why both)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, Subset

from trackcheck.checks._shared import _streams
from trackcheck.context import Context
from trackcheck.pipeline import primary, replace_primary


def blank(x: Any, token_id: int = 0) -> Any:
    """The input with its information removed: zeros for float inputs, one constant token id
    for integer (token) inputs; tuples and lists are blanked leaf by leaf. A dict of keyword
    inputs has its content tensor blanked (``input_ids``, ``pixel_values``: see
    ``pipeline.primary``) and keeps the rest: an all-zero ``attention_mask`` would mask every
    position (NaN in models with boolean masks), and padding stays padding."""
    if isinstance(x, Tensor):
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            return torch.zeros_like(x)
        return torch.full_like(x, token_id)
    if isinstance(x, list | tuple):
        return type(x)(blank(v, token_id) for v in x)
    if isinstance(x, dict):
        return replace_primary(x, blank(primary(x), token_id))
    return x


@dataclass
class Plan:
    """Where the two models' training batches come from and which held-out sets judge them."""

    batches: Iterator[Any]  # endless training batches, on the device
    judged: dict[str, Callable[[], Iterable[Any]]]  # set name -> a fresh loader over it
    note: str = ""  # what could not be done, said in the message


def plan(ctx: Context, train_holdout: float, max_eval: int) -> Plan:
    """Carve the training slice out of the training split (seeded), or say why not."""
    data = ctx.data
    judged: dict[str, Callable[[], Iterable[Any]]] = {"test split": data.test_loader}
    train = data.train
    if train_holdout <= 0:
        return Plan(ctx.train_batches(seed_offset=_streams.INPUT_INDEPENDENT), judged)
    if data.train_loader_fn is not None or isinstance(train, IterableDataset):
        note = (
            "no training slice was held out (a custom train loader or an iterable dataset "
            "cannot be split here), so train labels shuffled against their inputs can pass "
            "this check by luck"
        )
        return Plan(ctx.train_batches(seed_offset=_streams.INPUT_INDEPENDENT), judged, note)
    n = len(train)  # type: ignore[arg-type]
    k = min(int(n * train_holdout), max_eval)
    if k < 2 or n - k < 2:
        note = f"no training slice was held out: {n} training examples are too few to split"
        return Plan(ctx.train_batches(seed_offset=_streams.INPUT_INDEPENDENT), judged, note)
    order = torch.randperm(n, generator=ctx.generator(_streams.HOLDOUT_SPLIT)).tolist()
    held, rest = Subset(train, order[:k]), Subset(train, order[k:])
    judged["training slice"] = lambda: DataLoader(
        held, batch_size=data.batch_size, shuffle=False, collate_fn=data.collate_fn
    )

    def batches() -> Iterator[Any]:
        g = ctx.generator(_streams.INPUT_INDEPENDENT)
        while True:  # epochs over the rest, shuffled as the training loader would
            loader = DataLoader(
                rest,
                batch_size=data.batch_size,
                shuffle=True,
                generator=g,
                collate_fn=data.collate_fn,
            )
            yield from ctx.batches(loader)

    return Plan(batches(), judged)


@torch.no_grad()
def heldout_losses(
    ctx: Context,
    model: nn.Module,
    loader: Iterable[Any],
    max_eval: int,
    token_id: int | None = None,
) -> Tensor:
    """[N] per-example losses in eval mode over the first ``max_eval`` examples of
    ``loader``; with ``token_id`` set, on blanked inputs."""
    model.eval()
    losses: list[Tensor] = []
    seen = 0
    for x, y in ctx.batches(loader):
        if token_id is not None:
            x = blank(x, token_id)
        losses.append(ctx.per_example_loss(ctx.forward(model, x), y).double().cpu())
        seen += len(y)
        if seen >= max_eval:
            break
    model.train()
    if not losses:
        raise ValueError("a held-out loader yielded no batch: is the test split empty?")
    return torch.cat(losses)[:max_eval]
