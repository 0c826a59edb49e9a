"""The check registry: ``@register("id", Params)`` on a function makes it a check.

Check modules and packages live in :mod:`trackcheck.checks` and are imported automatically;
the order a stage runs them in is ``trackcheck.checks.CHECKLIST`` (with the checks'
relations, in that package's docstring). Another package's checks come in through entry
points of the group ``trackcheck.checks`` (in its pyproject.toml)::

    [project.entry-points."trackcheck.checks"]
    my_check = "my_pkg.my_check"      # a module whose @register runs on import

and then appear in the CLI's schema like built-in ones (``checks.my_check.param=3``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
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
    # among the checks outside trackcheck.checks.CHECKLIST (plugins), which run after the
    # built-ins: the lower first (then by name)
    order: int
    doc: str  # one line: what the check proves
    # the checks after it cannot run meaningfully when it fails (the pipeline contract):
    # they are skipped with a pointer to it instead of repeating its error
    precondition: bool = False

    def __call__(self, ctx: Context, params: Any) -> CheckResult:
        return self.fn(ctx, params)


_REGISTRY: dict[str, CheckSpec] = {}


def register(
    name: str, params: type, *, fast: bool = False, order: int = 100, precondition: bool = False
) -> Callable[[Callable[..., Any]], Any]:
    """Register ``fn(ctx, params) -> CheckResult`` as the check ``name``; ``precondition``:
    when it fails or errors, the checks after it are skipped with a pointer to it. A
    built-in check's place is its position in ``trackcheck.checks.CHECKLIST``; ``order``
    places a check that is not listed there (after all listed ones)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"two checks registered as {name!r}: rename one of them")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = CheckSpec(name, fn, params, fast, order, doc, precondition)
        return fn

    return deco


ENTRY_POINT_GROUP = "trackcheck.checks"


class CheckImportError(ImportError):
    """A check plugin (an entry point of ``trackcheck.checks``) failed to import."""


_imported = False
_import_error: CheckImportError | None = None


def _import_builtin_checks() -> None:
    import trackcheck.checks as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):  # modules and packages alike
        if not mod.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")


def _import_plugin(ep: EntryPoint) -> None:
    """Import the module an entry point names: its ``@register`` decorators run."""
    try:
        importlib.import_module(ep.module)
    except Exception as e:
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown"
        raise CheckImportError(
            f"the check plugin {ep.name} = {ep.value} (entry point group "
            f"{ENTRY_POINT_GROUP}, distribution {dist}) failed to import: "
            f"{type(e).__name__}: {e}. Fix that package or uninstall it"
        ) from e


def plugins() -> list[EntryPoint]:
    """The installed check plugins (entry points of ``trackcheck.checks``), not imported."""
    return list(entry_points(group=ENTRY_POINT_GROUP))


def _import_checks() -> None:
    # once per process: a rescan per call would let a check module (or a plugin) that
    # appears mid-sweep change the config schema between a sweep's jobs. A plugin that
    # failed to import fails every later call the same way, never silently.
    global _imported, _import_error
    if _import_error is not None:
        raise _import_error
    if _imported:
        return
    _import_builtin_checks()  # a built-in that fails to import raises here, on every call
    _imported = True
    for ep in plugins():
        try:
            _import_plugin(ep)
        except CheckImportError as e:
            _import_error = e
            raise


def _place(spec: CheckSpec) -> tuple[int, int, str]:
    """The sort key of the checklist order: a listed check's position in
    ``trackcheck.checks.CHECKLIST``, then the unlisted ones by ``order`` and name."""
    from trackcheck.checks import CHECKLIST

    if spec.name in CHECKLIST:
        return (CHECKLIST.index(spec.name), 0, spec.name)
    return (len(CHECKLIST), spec.order, spec.name)


def all_checks() -> dict[str, CheckSpec]:
    """Every registered check (built-in and plugins), in checklist order."""
    _import_checks()
    return dict(sorted(_REGISTRY.items(), key=lambda kv: _place(kv[1])))


def get_check(name: str) -> CheckSpec:
    checks = all_checks()
    if name not in checks:
        raise KeyError(f"unknown check {name!r}; available: {', '.join(checks)}")
    return checks[name]
