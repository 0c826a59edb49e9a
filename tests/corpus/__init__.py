"""The false-alarm corpus: correct programs re-implemented from official public examples.

Each module re-implements one program (pytorch/examples, the PyTorch tutorials, the Hugging
Face example scripts, and models trained, saved and reloaded inside the module) with its own
model, loss, output activation, optimizer, learning rate and batch size as the original has
them, at tiny sizes on small local data of the same kind. Each exposes ``program() -> dict``:
the keyword arguments of ``trackcheck.run`` that a user would write to check it (model,
data, and whichever of optimizer, loss, step, pipeline the original needs), and ``SOURCE``:
where the original is. A correct program should pass the full checklist on every seed.

``GLUE`` in a module names wiring a user should not need (a coverage gap), empty when none.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any


def names() -> list[str]:
    """Every program in the corpus, by module name."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def module(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def kwargs(name: str) -> dict[str, Any]:
    """The ``trackcheck.run`` keyword arguments of program ``name``."""
    return dict(module(name).program())
