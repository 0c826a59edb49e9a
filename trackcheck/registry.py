"""The check registry: ``@register("id", Params)`` on a function makes it a check.

Check modules live in :mod:`trackcheck.checks` and are imported automatically, so adding a
check is one module plus its test, with no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trackcheck.context import Context
    from trackcheck.core import CheckResult


@dataclass(frozen=True)
class CheckSpec:
    name: str
    fn: Callable[..., CheckResult]
    params: type  # a dataclass of documented defaults; its fields are the Hydra keys
    fast: bool  # part of the quick ``checks=fast`` selection
    order: int  # position in the checklist (cheap, foundational checks first)
    doc: str  # one line: what the check proves

    def __call__(self, ctx: Context, params: Any) -> CheckResult:
        return self.fn(ctx, params)


_REGISTRY: dict[str, CheckSpec] = {}


def register(
    name: str, params: type, *, fast: bool = False, order: int = 100
) -> Callable[[Callable[..., Any]], Any]:
    """Register ``fn(ctx, params) -> CheckResult`` as the check ``name``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"two checks registered as {name!r}: rename one of them")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = CheckSpec(name, fn, params, fast, order, doc)
        return fn

    return deco


_imported = False


def _import_builtin_checks() -> None:
    # once per process: a rescan per call would let a check module that appears mid-sweep
    # change the config schema between a sweep's jobs
    global _imported
    if _imported:
        return
    _imported = True
    import trackcheck.checks as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")


def all_checks() -> dict[str, CheckSpec]:
    """Every registered check, in checklist order (then by name)."""
    _import_builtin_checks()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def get_check(name: str) -> CheckSpec:
    checks = all_checks()
    if name not in checks:
        raise KeyError(f"unknown check {name!r}; available: {', '.join(checks)}")
    return checks[name]
