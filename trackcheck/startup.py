"""What the CLI decides before Hydra composes anything, and cleans up after it: torch-free.

A user's ``--config-dir`` comes before trackcheck's shipped config groups
(:func:`user_groups_first`), so their own ``data/digits.yaml`` is the ``data=digits``
they meant.

Importing torch and every check (to build the config schema) takes seconds, so the two
commands that run nothing are answered without it: ``--help`` prints the config with the
checks' params from a cache (:func:`trackcheck.config.help_schema`), and a command line
that selects no model gets the no-model message before Hydra creates an output dir.
"""

from __future__ import annotations

import atexit
import builtins
import gc
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin

HELP_FLAGS = frozenset({"--help", "-h", "--hydra-help"})
MULTIRUN_FLAGS = frozenset({"-m", "--multirun"})
# Hydra flags that print something and run no task
NO_TASK_FLAGS = frozenset({"--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--version"})
# what Hydra writes into a job's dir before the task function runs: nothing of the stage's
HYDRA_FILES = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})


def fast_exit() -> None:
    """At exit, skip the interpreter's last garbage collections: they walk every object
    torch, sklearn and pandas made (~0.8 s of CPU on 2 cores, the bulk of the exit time)
    only to free memory the OS takes back anyway. ``gc.freeze`` runs after the non-daemon
    threads were joined and after every atexit handler registered during the run (torch's,
    mlflow's, wandb's: registered later, run first); logging still flushes and closes its
    files after it. Only cyclic garbage is left uncollected. Safe in-process (tests): it
    acts only when the interpreter ends."""
    global _fast_exit_registered
    if not _fast_exit_registered:
        atexit.register(gc.freeze)
        _fast_exit_registered = True


_fast_exit_registered = False


@contextmanager
def cwd_on_path() -> Iterator[None]:
    """The current directory first on ``sys.path``, as ``python -m trackcheck`` has it, so
    the ``trackcheck`` console script finds ``model._target_=my_pkg.MyNet`` in the
    directory it runs in. Not under ``python -P`` / PYTHONSAFEPATH, like ``python -m``.
    Taken off again afterwards, for callers of ``cli.main`` in-process (tests)."""
    cwd = os.getcwd()
    safe_path = getattr(sys.flags, "safe_path", False)  # python -P, 3.11+
    if safe_path or any(p in ("", ".") or os.path.abspath(p) == cwd for p in sys.path):
        yield
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)


def wants_help(argv: Sequence[str]) -> bool:
    """``--help`` / ``--hydra-help``: Hydra prints help and exits; nothing is built."""
    return any(a in HELP_FLAGS for a in argv)


def quick_help(argv: Sequence[str]) -> bool:
    """``--help`` with nothing but overrides (and ``--resolve``) beside it: :func:`print_help`
    answers it. Other flags (``--config-dir``, ``--hydra-help``, ...) or a search path in
    the overrides are left to Hydra's own help, which is slower but knows them all."""
    if "--help" not in argv and "-h" not in argv:
        return False
    others = [a for a in argv if a not in ("--help", "-h", "--resolve")]
    return not any(a.startswith("-") or "searchpath" in a.partition("=")[0] for a in others)


def print_help(argv: Sequence[str], config_module: str, config_name: str) -> None:
    """What Hydra's ``--help`` prints (its template, the config groups, the composed
    config), in a third of the time: Hydra's help lists the groups through ~80 deep copies
    of its config store (~1 s); here they are read from the config repository once."""
    import string

    from hydra import compose, initialize_config_module
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType
    from omegaconf import OmegaConf, flag_override

    parser = get_args_parser()
    args = parser.parse_args(list(argv))
    GlobalHydra.instance().clear()  # as Hydra's main does: one composition per command
    with initialize_config_module(config_module, version_base="1.3"):
        cfg = compose(config_name, overrides=args.overrides, return_hydra_config=True)
        loader: Any = GlobalHydra.instance().config_loader()  # a ConfigLoaderImpl
        repo = loader.repository  # its config repository: listed without copies

        def groups(parent: str = "") -> list[str]:  # hydra.Hydra.list_all_config_groups
            found = []
            for g in repo.get_group_options(parent, ObjectType.GROUP):
                name = f"{parent}/{g}" if parent else g
                if repo.get_group_options(name, ObjectType.CONFIG):
                    found.append(name)
                found += groups(name)
            return found

        def listing(hydra_groups: bool) -> str:  # hydra.Hydra.format_config_groups
            chosen = [
                g for g in groups() if (g == "hydra" or g.startswith("hydra/")) == hydra_groups
            ]
            return "".join(
                f"{g}: {', '.join(sorted(repo.get_group_options(g, ObjectType.CONFIG)))}\n"
                for g in sorted(chosen)
            )

        template = string.Template(cfg.hydra.help.template)
        with flag_override(cfg, ["struct", "readonly"], [False, False]):
            del cfg["hydra"]
        flags = "".join(
            f"{','.join(a.option_strings)} : {a.help}\n"
            for a in parser._actions
            if a.option_strings
        )
        overrides_help = next(a.help for a in parser._actions if not a.option_strings)
        print(
            template.substitute(
                FLAGS_HELP=f"{flags}Overrides : {overrides_help}",
                APP_CONFIG_GROUPS=listing(hydra_groups=False),
                HYDRA_CONFIG_GROUPS=listing(hydra_groups=True),
                CONFIG=OmegaConf.to_yaml(cfg, resolve=args.resolve),
            )
        )


def figures_in_worker(argv: Sequence[str], min_checks: int) -> bool:
    """Whether this command line's stage will likely draw in the figure worker, so the CLI
    starts it first thing (:func:`trackcheck.render.prestart`). No when the jobs may run in
    other processes (a ``hydra/launcher`` override: each starts its own) or when
    ``checks.run=[...]`` names fewer than ``min_checks`` checks (such stages draw
    in-process: :data:`trackcheck.render.WORKER_MIN_CHECKS`), nor for a flag that runs no
    task (``--cfg job``, ``--info``)."""
    if any(a in NO_TASK_FLAGS for a in argv):
        return False
    for arg in argv:
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key == "hydra/launcher":
            return False
        if key == "checks.run" and value.startswith("[") and "all" not in value:
            names = [n for n in value.strip("[]").split(",") if n.strip()]
            if len(names) < min_checks:
                return False
    return True


def selects_no_model(argv: Sequence[str]) -> bool:
    """True only when no model can be in the composed config: the command line is plain
    overrides (and ``-m``), none of which names ``model``, and the primary config is ours
    (its defaults have no model). Anything else (``--config-dir``, ``--cfg``, a search
    path, a key with "model" in it) is left to Hydra, which composes and then knows."""
    for arg in argv:
        if arg in MULTIRUN_FLAGS:
            continue
        if arg.startswith("-"):  # --config-dir/-cd, --config-name, --cfg, --info, ...
            return False
        key = arg.partition("=")[0]
        if "model" in key or "searchpath" in key:
            return False
    return True


def is_unstarted(job_dir: Path, log_name: str) -> bool:
    """``job_dir`` holds only what Hydra wrote before the task ran (``.hydra/*.yaml`` and
    the job's log): no report, no figure, nothing of the user's."""
    if not job_dir.is_dir():
        return False
    for entry in job_dir.iterdir():
        if entry.name == log_name and entry.is_file():
            continue
        if entry.name == ".hydra" and entry.is_dir():
            if all(p.name in HYDRA_FILES and p.is_file() for p in entry.iterdir()):
                continue
        return False
    return True


def remove_unstarted(job_dir: Path, log_name: str, stop_at: Path) -> bool:
    """Remove the output dir of a run that never started (a refused config, no model), so
    ``trackcheck-gate dir outputs`` does not count it as a crashed job; then its parents
    (``outputs/<date>``) while empty, up to ``stop_at`` (the directory the command ran in).
    Anything else in the dir (a report, a file of the user's) keeps it."""
    job_dir, stop_at = job_dir.resolve(), stop_at.resolve()
    if stop_at.is_relative_to(job_dir) or not is_unstarted(job_dir, log_name):
        return False  # hydra.run.dir=. (or above it): never the folder the user works in
    _close_file_handlers(job_dir)
    shutil.rmtree(job_dir, ignore_errors=True)
    parent = job_dir.parent
    while parent != stop_at and parent.is_relative_to(stop_at) and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    return not job_dir.exists()


def _close_file_handlers(folder: Path) -> None:
    """Close the logging handlers writing into ``folder`` (Hydra's job log)."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if not isinstance(logger, logging.Logger):
            continue  # a PlaceHolder
        for h in list(logger.handlers):
            path = getattr(h, "baseFilename", None)
            if path is not None and Path(path).resolve().is_relative_to(folder):
                logger.removeHandler(h)
                h.close()


# --- the user's config groups before the shipped ones -----------------------------------------
class UserGroups(FileConfigSource):
    """A ``--config-dir`` seen through its config groups only (``data/``, ``model/``, ...):
    its top-level files are left out, so a ``config.yaml`` of the user's own app there does
    not replace trackcheck's primary config (Hydra's own source for the dir, later on the
    search path, still serves ``--config-name``)."""

    @staticmethod
    def scheme() -> str:
        return "trackcheck-groups"

    def is_config(self, config_path: str) -> bool:
        return "/" in config_path.strip("/") and super().is_config(config_path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> builtins.list[str]:
        found = super().list(config_path, results_filter)
        if config_path.strip("/"):
            return found
        return [f for f in found if super().is_group(f)]  # top level: the groups only


class UserGroupsFirst(SearchPathPlugin):
    """Puts each dir in ``_user_dirs`` (set by :func:`user_groups_first`) before trackcheck's
    configs. Hydra itself puts ``--config-dir`` after the app's own configs, so a
    ``data/digits.yaml`` there would lose to the shipped ``data/digits`` unnoticed."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for d in _user_dirs:
            search_path.prepend(
                provider="command-line (groups first)",
                path=f"{UserGroups.scheme()}://{d}",
                anchor=SearchPathQuery(provider="main"),
            )


_user_dirs: list[str] = []


def config_dir_of(argv: Sequence[str]) -> str | None:
    """The ``--config-dir`` / ``-cd`` of a command line (any spelling Hydra accepts)."""
    from hydra._internal.utils import get_args_parser

    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
    except SystemExit:  # not a command line Hydra takes: Hydra says so itself
        return None
    return args.config_dir  # type: ignore[no-any-return]


@contextmanager
def user_groups_first(argv: Sequence[str]) -> Iterator[None]:
    """While Hydra runs this command line, the config groups of its ``--config-dir`` come
    before trackcheck's shipped ones: ``data=digits`` is the user's ``data/digits.yaml``
    where both exist. A missing dir is left to Hydra's own message."""
    found = config_dir_of(argv)
    if found is None or not os.path.isdir(found):
        yield
        return
    Plugins.instance().register(UserGroups)
    Plugins.instance().register(UserGroupsFirst)  # a no-op while _user_dirs is empty
    _user_dirs.append(os.path.abspath(found))
    try:
        yield
    finally:
        _user_dirs.clear()
