"""A module imported on its first attribute use, for the heavy optional ones (scipy.stats
takes ~0.5 s): a check module names it at the top as usual, and the import happens only
when a check computes with it, so a stage that never does (or ``--help``) never pays::

    if TYPE_CHECKING:
        from scipy import stats
    else:
        stats = lazy_module("scipy.stats")
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands in for the module ``name``; each attribute comes from the real one."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        # only reached for names not on this object: importlib caches the module
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy_module(name: str) -> Any:
    """``name`` (``"scipy.stats"``), imported when an attribute is first read."""
    return LazyModule(name)
