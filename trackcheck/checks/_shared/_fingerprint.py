"""Byte-exact fingerprints of data: compare samples and batches bitwise, count them as multisets.

Shared by determinism, augmentation_off and full_eval (the leading underscore keeps it out of
the registry). A fingerprint hashes every tensor's dtype, shape and raw bytes, so two values
match only when they are bit-identical (NaN payloads included, where ``torch.equal`` says
NaN != NaN).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            h.update(f"K{k}".encode())
            _feed(h, obj[k])
    elif isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    else:  # numbers, strings, numpy arrays: their repr is exact enough to tell values apart
        h.update(f"O{type(obj).__name__}{obj!r}".encode())


def fingerprint(obj: Any) -> str:
    """A short hex digest of a tensor, or of a (nested) tuple/list/dict of them."""
    h = hashlib.blake2b(digest_size=12)
    _feed(h, obj)
    return h.hexdigest()


# a dict batch's padding marker (Hugging Face's convention, pipeline.Pipeline.mask_key)
MASK_KEY = "attention_mask"


def _row(obj: Any, i: int, mask: Tensor | None = None) -> Any:
    """Example ``i`` of a collated batch: row i of every tensor in it. With ``mask`` [B, T]
    (the batch's attention_mask), every [B, T, ...] tensor's row keeps only the positions
    the mask marks valid: an example padded to another length is still the same example."""
    if isinstance(obj, Tensor):
        if mask is not None and obj.dim() >= 2 and obj.shape[:2] == mask.shape:
            return obj[i][mask[i] != 0]
        return obj[i]
    if isinstance(obj, Mapping):
        return {k: _row(v, i, mask) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return [_row(v, i, mask) for v in obj]
    return obj


def batch_len(batch: Any) -> int:
    """Examples in a collated batch: the first dimension of its first tensor."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    items = batch.values() if isinstance(batch, Mapping) else batch
    for item in items:
        return batch_len(item)
    raise ValueError(f"cannot tell the batch size of a {type(batch).__name__}")


def row_fingerprints(batch: Any) -> list[str]:
    """One fingerprint per example of a collated batch (inputs and targets together),
    padding left out: a dict batch's ``attention_mask`` [B, T] cuts every [B, T, ...] tensor
    to its valid positions, so the same example padded in batches of other lengths (a
    collate_fn that pads per batch) has one fingerprint."""
    mask = batch.get(MASK_KEY) if isinstance(batch, Mapping) else None
    mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
    return [fingerprint(_row(batch, i, mask)) for i in range(batch_len(batch))]


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between two same-structured values (inf if shapes differ)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            return float("inf")
        if not a.numel():
            return 0.0
        d = (a.detach().cpu().double() - b.detach().cpu().double()).abs()
        return float(d.nan_to_num(nan=float("inf")).max())
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return max((max_abs_diff(a[k], b[k]) for k in a if k in b), default=0.0)
    if isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, str | bytes):
        return max((max_abs_diff(x, y) for x, y in zip(a, b, strict=False)), default=0.0)
    return 0.0 if a == b else float("inf")
