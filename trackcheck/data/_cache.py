"""An on-disk cache of the shipped datasets' split arrays.

Loading a scikit-learn dataset and splitting it imports scikit-learn (and scipy through it):
about 1 s of every run's start-up for a few hundred kilobytes of arrays that never change.
The first run saves the split arrays as one ``.npz``; later runs read it back in a few
milliseconds. The file name holds everything the arrays depend on: the loader's arguments,
the scikit-learn version and a hash of the loading code (so an edit to a loader or an
upgrade never reads stale arrays).

Where: ``$TRACKCHECK_CACHE_DIR``, else ``$XDG_CACHE_HOME/trackcheck``, else
``~/.cache/trackcheck``; ``TRACKCHECK_CACHE_DIR=0`` (or empty) turns the cache off. A cache
that cannot be read or written is ignored: the arrays are then built as if there were none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zipfile
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

ENV = "TRACKCHECK_CACHE_DIR"
Arrays = dict[str, np.ndarray]


def cache_dir() -> Path | None:
    """Where cached arrays live, or None when the cache is off."""
    if ENV in os.environ:
        value = os.environ[ENV]
        return None if value in ("", "0") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trackcheck"


@cache
def _version_tag(source: str) -> str:
    """scikit-learn's version and a hash of the module that builds the arrays."""
    code = hashlib.blake2b(Path(source).read_bytes(), digest_size=6).hexdigest()
    return f"sklearn{metadata.version('scikit-learn')}-{code}"


def cached(name: str, args: tuple[object, ...], source: str, build: Callable[[], Arrays]) -> Arrays:
    """``build()``, or what it returned on an earlier run with the same ``name``, ``args``
    and loading code (``source``: the path of the module that defines ``build``)."""
    root = cache_dir()
    if root is None:
        return build()
    key = "-".join([name, *(str(a) for a in args), _version_tag(source)])
    path = root / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # not there yet, or unreadable (half a file from a killed run): rebuild it
    arrays = build()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    try:  # written aside and renamed: parallel sweep jobs never read half a file
        root.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # stubs read **arrays as allow_pickle
        os.replace(tmp, path)
    except OSError:  # a read-only home, a file where the directory should be: no cache
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return arrays
