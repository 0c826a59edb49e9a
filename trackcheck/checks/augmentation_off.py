"""simplify: no augmentation or other randomness is active in the data path while the checks run.

The same samples are fetched twice through the real data path and must be bit-identical:
  1. each split's ``__getitem__`` (indices spread over the whole dataset);
  2. the training loader as training builds it (``data.train_loader``: its sampler, collate_fn
     and workers), twice, each time with a generator seeded the same way, so the order is fixed
     and only the data can differ;
  3. the eval loader, twice.
The global RNGs are NOT reseeded between fetches: augmentation drawing from them (torchvision's
transforms do) must show as a difference. Separately, the datasets' transform attributes are
searched for random transforms by class name, so an augmentation that happens to be inactive
(p=0, a crop the size of the image) is still named.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from trackcheck import plots
from trackcheck.checks._shared import _streams
from trackcheck.checks._shared._fingerprint import fingerprint, max_abs_diff
from trackcheck.context import Context
from trackcheck.core import CheckResult, Status
from trackcheck.pipeline import PipelineError, primary
from trackcheck.registry import register

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Names of random transforms (classes, or functions used as transforms), case-insensitive:
# torchvision's Random* (RandomCrop, RandomHorizontalFlip, RandomErasing, RandomApply, ...),
# ColorJitter, AutoAugment/RandAugment/TrivialAugmentWide/AugMix, GaussianNoise,
# ElasticTransform, MixUp/CutMix, and albumentations' HorizontalFlip, GaussNoise,
# CoarseDropout. Plain "Crop" is not matched: CenterCrop and FiveCrop are deterministic.
RANDOM_TRANSFORM = re.compile(
    r"random|jitter|flip|erasing|noise|augment|augmix|elastic|mixup|cutmix|coarsedropout",
    re.IGNORECASE,
)
# attributes where datasets and wrappers keep their transforms or the datasets they wrap
TRANSFORM_ATTRS = (
    "transform",
    "transforms",
    "target_transform",
    "augment",
    "augmentation",
    "augmentations",
    "pipeline",
    "dataset",
    "datasets",
)


@dataclass
class AugmentationOffParams:
    n_samples: int = 32  # items fetched twice per split, spread evenly over the dataset
    n_batches: int = 2  # batches compared per loader (train loader and eval loader)
    # the generator stream both training loaders are seeded from
    seed_offset: int = _streams.AUGMENTATION


@dataclass
class Mismatch:
    where: str  # "train[17]", "train loader batch 0", ...
    max_abs_diff: float
    first: Any
    second: Any


def random_transforms(
    obj: Any, path: str = "", depth: int = 0, seen: set[int] | None = None
) -> list[tuple[str, str]]:
    """(attribute path, class name) of every random-looking transform reachable from ``obj``
    through transform attributes, Compose-like lists and nn.Module children."""
    seen = set() if seen is None else seen
    if obj is None or id(obj) in seen or depth > 6 or isinstance(obj, str | bytes | Tensor):
        return []
    seen.add(id(obj))
    found = []
    name = getattr(obj, "__name__", None) or type(obj).__name__
    # datasets are containers, not transforms: a "RandomShapes" dataset may be fixed data
    container = isinstance(obj, list | tuple | Mapping | Dataset)
    if not container and RANDOM_TRANSFORM.search(name):
        found.append((path or name, name))
    children: list[tuple[str, Any]] = []
    if isinstance(obj, list | tuple):
        children = [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    elif isinstance(obj, Mapping):
        children = [(f"{path}[{k!r}]", v) for k, v in obj.items()]
    else:
        children = [(f"{path}.{a}", getattr(obj, a, None)) for a in TRANSFORM_ATTRS]
        if isinstance(obj, torch.nn.Module):
            children += [(f"{path}.{n}", m) for n, m in obj.named_children()]
    for child_path, child in children:
        found += random_transforms(child, child_path, depth + 1, seen)
    return found


def _indices(n_items: int, k: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n_items - 1, min(k, n_items))})


def _compare(where: str, a: Any, b: Any) -> Mismatch | None:
    if fingerprint(a) == fingerprint(b):
        return None
    return Mismatch(where, max_abs_diff(a, b), a, b)


def _items_twice(split: str, ds: Dataset[Any], k: int) -> Iterator[Mismatch | None]:
    """Items fetched twice by index (nothing for an IterableDataset: the loaders cover it)."""
    if not hasattr(ds, "__len__"):
        return
    for i in _indices(len(ds), k):
        yield _compare(f"{split}[{i}]", ds[i], ds[i])


def _loaders_twice(ctx: Context, p: AugmentationOffParams) -> Iterator[Mismatch | None]:
    train = [
        list(islice(ctx.data.train_loader(generator=ctx.generator(p.seed_offset)), p.n_batches))
        for _ in range(2)
    ]
    for i, (a, b) in enumerate(zip(*train, strict=False)):
        yield _compare(f"train loader batch {i}", a, b)
    test = [list(islice(ctx.data.test_loader(), p.n_batches)) for _ in range(2)]
    for i, (a, b) in enumerate(zip(*test, strict=False)):
        yield _compare(f"eval loader batch {i}", a, b)


def _first_tensor(obj: Any) -> Tensor | None:
    """The content tensor of a sample or batch: itself, the first of a tuple, or a dict's
    ``pixel_values`` (pipeline.PRIMARY_KEYS), else its first tensor."""
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, Mapping):
        try:
            return primary(obj)
        except PipelineError:  # a dict with no tensor: nothing to draw
            return None
    if isinstance(obj, list | tuple):
        return next((t for t in map(_first_tensor, obj) if t is not None), None)
    return None


def _image_figure(m: Mismatch) -> plots.Deferred | None:
    """First fetch, second fetch and their difference, for an image sample (or batch row 0)."""
    a, b = _first_tensor(m.first), _first_tensor(m.second)
    if a is None or b is None or a.shape != b.shape or a.dim() < 2:
        return None
    while a.dim() > 3:  # a batch [B, C, H, W]: show its first example
        a, b = a[0], b[0]
    if a.dim() == 3:  # [C, H, W]: first channel
        a, b = a[0], b[0]
    a_np, b_np = (t.detach().cpu().float().numpy() for t in (a, b))  # [H, W] each
    title = f"{m.where} fetched twice (max |diff| {m.max_abs_diff:.3g})"
    return plots.deferred(_draw_twice, a_np, b_np, title)


def _draw_twice(a: np.ndarray, b: np.ndarray, title: str) -> Figure:
    """Two fetches [H, W] of one image and their difference, side by side."""
    fig, axes = plots.pyplot().subplots(1, 3, figsize=(7, 2.6))
    # axes off: room only for the suptitle and the panel titles above
    plots.fixed_margins(fig, left=0.1, bottom=0.1, right=0.1, top=0.6, wgap=0.2)
    for ax, img, name in zip(
        axes, (a, b, b - a), ("fetch 1", "fetch 2", "difference"), strict=True
    ):
        ax.imshow(img, cmap="gray")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


@register("augmentation_off", AugmentationOffParams, fast=True)
def augmentation_off(ctx: Context, p: AugmentationOffParams) -> CheckResult:
    """The same samples fetched twice are bit-identical; no random transform is attached."""
    data = ctx.data
    results = [
        *_items_twice("train", data.train, p.n_samples),
        *_items_twice("test", data.test, p.n_samples),
        *_loaders_twice(ctx, p),
    ]
    transforms = random_transforms(data.train, "train") + random_transforms(data.test, "test")
    transforms += random_transforms(data.collate_fn, "collate_fn")
    return _judge(p, results, transforms, image=data.kind == "image")


def _judge(
    p: AugmentationOffParams,
    results: list[Mismatch | None],
    transforms: list[tuple[str, str]],
    image: bool,
) -> CheckResult:
    """Values (counts, largest difference, tables, the first image fetched twice), then the
    verdict: FAIL on any difference, WARN on a random transform attached, else PASS."""
    mismatches = [m for m in results if m is not None]
    metrics = {
        "n_compared": float(len(results)),
        "n_mismatched": float(len(mismatches)),
        "max_abs_diff": max((m.max_abs_diff for m in mismatches), default=0.0),
        "n_random_transforms": float(len(transforms)),
    }
    tables: dict[str, dict[str, list[Any]]] = {}
    if transforms:
        tables["random_transforms"] = {
            "columns": ["attribute", "class"],
            "rows": [[path, cls] for path, cls in transforms],
        }
    figures: dict[str, Any] = {}
    if mismatches:
        tables["mismatches"] = {
            "columns": ["where", "max_abs_diff"],
            "rows": [[m.where, m.max_abs_diff] for m in mismatches],
        }
        fig = _image_figure(mismatches[0]) if image else None
        if fig is not None:
            figures["fetched_twice"] = fig
    status, msg = _verdict(p, len(results), mismatches, transforms, metrics["max_abs_diff"])
    return CheckResult(
        "augmentation_off",
        status,
        msg,
        metrics=metrics,
        figures=figures,
        tables=tables,
        value=float(len(mismatches)),
        threshold="0 mismatches, no random transform",
    )


def _verdict(
    p: AugmentationOffParams,
    n_compared: int,
    mismatches: list[Mismatch],
    transforms: list[tuple[str, str]],
    max_diff: float,
) -> tuple[Status, str]:
    named = ", ".join(f"{cls} at {path}" for path, cls in transforms)
    if mismatches:
        where = ", ".join(m.where for m in mismatches[:4])
        where += ", ..." if len(mismatches) > 4 else ""
        seen = (
            f"random transforms attached: {named}"
            if named
            else "no random transform attached by name, so look in __getitem__ or the collate_fn"
        )
        return Status.FAIL, (
            f"{len(mismatches)} of {n_compared} samples/batches differ when fetched twice "
            f"({where}; largest |diff| {max_diff:.3g}), expected bit-identical: "
            f"the data path draws randomness on access; {seen}. Turn augmentation off for the "
            "sanity stage (and for the eval set always)"
        )
    if transforms:
        return Status.WARN, (
            f"all {n_compared} samples/batches fetched twice are bit-identical, but random "
            f"transforms are attached ({named}): inactive here, or seeded per index; remove "
            "them for the sanity stage so no augmentation can be on"
        )
    return Status.PASS, (
        f"all {n_compared} samples/batches fetched twice are bit-identical "
        f"({p.n_samples} items per split via __getitem__, {p.n_batches} batches per loader); "
        "no random transform attached"
    )
