"""How many threads each job's torch uses, so the jobs that share a machine share its cores.

PyTorch gives every process an intra-op pool as large as the machine (or OMP_NUM_THREADS).
Several jobs on one machine then run ``jobs x cores`` spinning threads on ``cores`` cores:
measured on 2 cores, a check that takes 2 s alone took 20-130 s beside a few other torch
processes. ``threads: auto`` (the default) gives each job its share of the cores it runs on,
from what the launcher says about how many jobs run at once:

- joblib: ``hydra.launcher.n_jobs`` processes at once (at most the batch's jobs);
- submitit_local: every job of a batch at once, each ``tasks_per_node`` processes
  (``cpus_per_task``, when set, caps the share);
- submitit_slurm: ``cpus_per_task`` (SLURM's allocation; unset, the cores the job may use);
- ray: the task's ``hydra.launcher.ray.remote.num_cpus`` (Ray's default: 1), the CPUs Ray
  reserves for it;
- the basic launcher and single runs: one job at a time, torch's default is left alone.

``threads: N`` sets N threads, ``threads: 0`` leaves torch's default. Never fewer than 1.
``cores`` are the ones this process may run on (``os.sched_getaffinity``: a SLURM or
container CPU set, ``taskset``), not the machine's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trackcheck.core import ConfigError

AUTO = "auto"
TORCH_DEFAULT = 0


@dataclass(frozen=True)
class Choice:
    """``threads``: what torch.set_num_threads gets (None: torch's default is kept);
    ``reason``: where it comes from, in the config's words (report.json shows it)."""

    threads: int | None
    reason: str


_last: Choice | None = None  # what this process chose last: report.json's environment


def cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows: no affinity API
        return max(1, os.cpu_count() or 1)


def parse_setting(value: Any) -> int | str:
    """``auto``, or a number of threads >= 0 (0: torch's default)."""
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise ConfigError(
            f"threads={value}: expected auto (each job its share of the cores), 0 (torch's "
            "default) or a number of threads, e.g. threads=4"
        )
    return n


def _int(node: Mapping[str, Any], key: str) -> int | None:
    value = node.get(key)
    return int(value) if value is not None else None


def _share(cores_: int, at_once: int, what: str) -> Choice:
    return Choice(max(1, cores_ // max(1, at_once)), f"{what}: {at_once} at once on {cores_} cores")


def for_launcher(launcher: Mapping[str, Any], cores_: int, batch: int | None) -> Choice:
    """Each job's threads under ``launcher`` (the ``hydra.launcher`` node) on ``cores_``
    cores, ``batch`` jobs launched together (None: not known)."""
    target = str(launcher.get("_target_") or "")
    name = target.rsplit(".", 1)[-1]
    if "joblib" in target:
        n_jobs = _int(launcher, "n_jobs") or 1
        if n_jobs < 0:  # joblib: -1 = every core, -2 = all but one, ...
            n_jobs = max(1, cores_ + 1 + n_jobs)
        at_once = min(n_jobs, batch) if batch else n_jobs
        return _share(cores_, at_once, f"joblib n_jobs={launcher.get('n_jobs')}")
    if name == "LocalLauncher" and "submitit" in target:
        tasks = _int(launcher, "tasks_per_node") or 1
        cpus = _int(launcher, "cpus_per_task")
        if batch is None:  # all of a batch run at once; how many is unknown: the safe side
            return Choice(max(1, min(cpus or 1, cores_)), "submitit_local, batch size unknown")
        share = _share(cores_, batch * tasks, f"submitit_local: {batch} job(s) x {tasks} task(s)")
        if cpus is not None and cpus < (share.threads or 1):
            return Choice(max(1, cpus), f"submitit_local cpus_per_task={cpus}")
        return share
    if name == "SlurmLauncher":
        cpus = _int(launcher, "cpus_per_task")
        if cpus is None:
            return Choice(cores_, f"submitit_slurm: the {cores_} cores SLURM gave the job")
        return Choice(max(1, min(cpus, cores_)), f"submitit_slurm cpus_per_task={cpus}")
    if "ray_launcher" in target or "ray_aws_launcher" in target:
        remote = (launcher.get("ray") or {}).get("remote") or {}
        cpus = remote.get("num_cpus")
        n = 1 if cpus is None else max(1, int(float(cpus)))  # Ray reserves 1 CPU per task
        return Choice(min(n, cores_), f"ray remote num_cpus={cpus if cpus is not None else 1}")
    if name == "BasicLauncher":
        return Choice(None, "one job at a time: torch's default")
    return Choice(None, f"unknown launcher {name or '?'}: torch's default (set threads=N)")


def choose(
    setting: Any, launcher: Mapping[str, Any] | None, cores_: int, batch: int | None = None
) -> Choice:
    """The thread count for one job: ``setting`` (``threads``) wins; ``auto`` reads the
    launcher (None: a single run, which has the machine to itself)."""
    parsed = parse_setting(setting)
    if parsed == TORCH_DEFAULT:
        return Choice(None, "threads=0: torch's default")
    if isinstance(parsed, int):
        return Choice(parsed, f"threads={parsed}")
    if launcher is None:
        return Choice(None, "single run: torch's default")
    return for_launcher(launcher, cores_, batch)


def batch_size(sweep_dir: Path) -> int | None:
    """How many jobs the sweep launches together, from the ``multirun.yaml`` Hydra's
    BasicSweeper writes before the first job (its params, overrides, ``max_batch_size``);
    ``hydra.sweeper.n_jobs`` for the optimising sweepers (Optuna); None when unknown."""
    from omegaconf import OmegaConf

    path = sweep_dir / "multirun.yaml"
    try:
        hydra = OmegaConf.load(path).hydra
        sweeper = hydra.sweeper
        if "BasicSweeper" not in str(sweeper.get("_target_", "")):
            n = sweeper.get("n_jobs")
            return int(n) if n else None
        # what BasicSweeper sweeps: hydra.sweeper.params, then the command line's overrides
        params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        return _basic_batch(params + list(hydra.overrides.task), sweeper.get("max_batch_size"))
    except Exception:  # noqa: BLE001 - no file, not Hydra's format: the launcher decides
        return None


def _basic_batch(overrides: Sequence[str], max_batch_size: int | None) -> int:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    batches = BasicSweeper.split_arguments(parsed, max_batch_size)
    return max((len(b) for b in batches), default=1)


def apply(setting: Any) -> Choice:
    """Choose this job's threads from ``setting`` and the running Hydra job's launcher,
    and set them (``torch.set_num_threads``); remembered for report.json."""
    global _last
    launcher, batch = None, None
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hc = HydraConfig.get()
        launcher = hc.launcher
        batch = batch_size(Path(hc.runtime.cwd) / hc.sweep.dir)
    choice = choose(setting, launcher, cores(), batch)
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    _last = choice
    return choice


def environment() -> dict[str, Any]:
    """``torch_threads`` (what torch uses now) and, after ``apply``, where it came from."""
    env: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "cores": cores()}
    if _last is not None:
        env["torch_threads_from"] = _last.reason
    return env
