"""trackcheck's loaders give a plain TensorDataset's batches a batch at a time: the same
batches, in the same order, as torch's DataLoader with the default collate."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from trackcheck.data.spec import loader


@pytest.fixture
def ds():
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(70, 3, 4, generator=g), torch.randint(0, 5, (70,)))


@pytest.mark.parametrize("shuffle", [False, True])
def test_tensor_dataset_batches_equal_the_default_collate(ds, shuffle):
    ours = loader(ds, 16, shuffle=shuffle, generator=torch.Generator().manual_seed(3))
    torch_ = DataLoader(
        ds, batch_size=16, shuffle=shuffle, generator=torch.Generator().manual_seed(3)
    )
    got, want = list(ours) + list(ours), list(torch_) + list(torch_)  # two epochs
    assert [len(b[0]) for b in got] == [16, 16, 16, 16, 6] * 2  # the last batch kept
    for a, b in zip(got, want, strict=True):
        assert type(a) is type(b) is list
        for ta, tb in zip(a, b, strict=True):
            torch.testing.assert_close(ta, tb, rtol=0, atol=0)


def test_a_custom_collate_gets_its_examples_one_by_one(ds):
    seen = []
    first = next(iter(loader(ds, 8, collate_fn=lambda items: seen.append(len(items)) or items)))
    assert seen == [8] and len(first) == 8 and len(first[0]) == 2  # 8 (x, y) pairs
