"""The shipped datasets' split arrays are cached on disk: a later run reads them back without
importing scikit-learn, and a cache that is broken, off or unwritable changes nothing."""

from __future__ import annotations

import re
import subprocess
import sys

import torch

from trackcheck.data import _cache, breast_cancer, digits


def tensors(spec):
    return [t for split in (spec.train, spec.test) for t in split.tensors]


def assert_same(a, b):
    for ta, tb in zip(tensors(a), tensors(b), strict=True):
        assert ta.dtype == tb.dtype
        torch.testing.assert_close(ta, tb, rtol=0, atol=0)
    assert a.feature_names == b.feature_names and a.class_names == b.class_names


def test_a_second_load_reads_the_cache_without_importing_sklearn(tmp_path):
    env = {"TRACKCHECK_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = "from trackcheck.data import digits; digits()"
    runs = [
        subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    sklearn = re.compile(r"\|\s+sklearn\b")
    assert sklearn.search(runs[0].stderr)  # the first run builds the arrays
    assert not sklearn.search(runs[1].stderr)  # the second only reads them
    assert len(list(tmp_path.glob("digits-*.npz"))) == 1


def test_cached_arrays_equal_freshly_built_ones(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.ENV, "0")
    fresh = breast_cancer()
    monkeypatch.setenv(_cache.ENV, str(tmp_path))
    breast_cancer()  # builds and writes
    assert_same(breast_cancer(), fresh)  # reads


def test_a_truncated_cache_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.ENV, str(tmp_path))
    first = digits()
    (path,) = tmp_path.glob("digits-*.npz")
    path.write_bytes(path.read_bytes()[:1000])  # a run killed mid-write by another writer
    assert_same(digits(), first)
    assert path.stat().st_size > 1000  # written again, whole


def test_an_unwritable_cache_dir_is_ignored(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(_cache.ENV, str(blocker / "cache"))
    assert len(digits().train) == 1437


def test_a_split_argument_is_part_of_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.ENV, str(tmp_path))
    assert len(digits(test_fraction=0.2).test) != len(digits(test_fraction=0.5).test)
    assert len(list(tmp_path.glob("digits-*.npz"))) == 2
