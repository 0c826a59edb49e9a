import torch
from conftest import run_check
from torch.utils.data import DataLoader, Dataset, default_collate

from trackcheck import DataSpec
from trackcheck.checks.augmentation_off import random_transforms
from trackcheck.core import Status
from trackcheck.models import MLP


# torchvision is not installed: small stand-ins named like its transforms
class Compose:
    def __init__(self, transforms: list) -> None:  # type: ignore[type-arg]
        self.transforms = transforms

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.transforms:
            x = t(x)
        return x


class CenterCrop:  # deterministic: must not be flagged
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1) if float(torch.rand(())) < self.p else x


class TransformedDataset(Dataset):
    """(x, y) pairs from a TensorDataset with ``transform`` applied on access, as torchvision
    datasets do."""

    def __init__(self, base: Dataset, transform=None) -> None:  # type: ignore[no-untyped-def]
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        x, y = self.base[i]
        return (self.transform(x) if self.transform else x), y


class NoisyOnAccess(TransformedDataset):
    """Planted bug: Gaussian noise added inside __getitem__ (no transform object to see)."""

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        x, y = self.base[i]
        return x + 0.1 * torch.randn_like(x), y


def _with(data: DataSpec, train: Dataset, **kw) -> DataSpec:  # type: ignore[no-untyped-def]
    return DataSpec(
        train=train,
        test=data.test,
        task=data.task,
        kind=data.kind,
        batch_size=data.batch_size,
        **kw,
    )


def _model():  # type: ignore[no-untyped-def]
    return MLP([1, 8, 8], 10, width=8)


def test_passes_on_the_shipped_digits(digits_data):
    r = run_check("augmentation_off", _model, digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["n_compared"] == 32 * 2 + 2 * 2 and r.metrics["n_mismatched"] == 0


def test_fails_on_noise_added_on_access_and_shows_the_image(digits_data):
    data = _with(digits_data, NoisyOnAccess(digits_data.train))
    r = run_check("augmentation_off", _model, data)
    assert r.status == Status.FAIL
    assert "train[0]" in r.message and "look in __getitem__" in r.message
    assert r.metrics["n_mismatched"] == 32 + 2  # every train item and both train batches
    assert "fetched_twice" in r.figures


def test_fails_on_a_random_flip_and_names_it(digits_data):
    flip = Compose([CenterCrop(), RandomHorizontalFlip(p=0.5)])
    data = _with(digits_data, TransformedDataset(digits_data.train, flip))
    r = run_check("augmentation_off", _model, data)
    assert r.status == Status.FAIL
    assert "RandomHorizontalFlip at train.transform.transforms[1]" in r.message
    assert "CenterCrop" not in r.message


def test_warns_on_an_attached_but_inactive_random_transform(digits_data):
    off = Compose([RandomHorizontalFlip(p=0.0)])
    data = _with(digits_data, TransformedDataset(digits_data.train, off))
    r = run_check("augmentation_off", _model, data)
    assert r.status == Status.WARN
    assert r.metrics["n_mismatched"] == 0 and "RandomHorizontalFlip" in r.message


def test_fails_on_a_batch_level_random_transform_in_the_loader(digits_data):
    def noisy_loader(generator=None, batch_size=64):  # type: ignore[no-untyped-def]
        def collate(items):  # type: ignore[no-untyped-def]
            x, y = default_collate(items)
            return x + 0.1 * torch.randn_like(x), y  # e.g. a mixup-style collate gone wrong

        return DataLoader(
            digits_data.train,
            batch_size=batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=collate,
        )

    data = _with(digits_data, digits_data.train, train_loader_fn=noisy_loader)
    r = run_check("augmentation_off", _model, data)
    assert r.status == Status.FAIL
    assert "train loader batch 0" in r.message and "train[" not in r.message


def test_finder_walks_wrappers_and_lists_but_not_deterministic_transforms():
    class Subset(Dataset):  # a wrapper keeps its dataset in .dataset, like torch's Subset
        def __init__(self, dataset: Dataset) -> None:
            self.dataset = dataset

    inner = TransformedDataset([], Compose([CenterCrop(), Compose([RandomHorizontalFlip()])]))
    found = random_transforms(Subset(inner), "train")
    assert found == [
        ("train.dataset.transform.transforms[1].transforms[0]", "RandomHorizontalFlip")
    ]
    assert random_transforms(TransformedDataset([], CenterCrop()), "train") == []


def test_dict_items_with_noise_fail_and_show_the_pixel_values():
    from helpers.hf_models import DictItems, digit_pixels

    class NoisyPixels(DictItems):  # {"pixel_values", "labels"} with noise drawn on access
        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            item = super().__getitem__(i)
            return {**item, "pixel_values": item["pixel_values"] + torch.randn(1, 16, 16)}

    data = digit_pixels()
    data.train = NoisyPixels(**data.train.columns)  # type: ignore[attr-defined]
    r = run_check("augmentation_off", lambda: MLP([1, 16, 16], 10), data)
    assert r.status == Status.FAIL
    assert "fetched_twice" in r.figures  # drawn from the dict's pixel_values
