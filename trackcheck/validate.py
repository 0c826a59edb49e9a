"""Everything a user can get wrong, checked before compute.

The runner calls these before the first model is built and before a tracker run opens, so
a typo costs one ConfigError line instead of minutes of compute: the check names and each
check's params (their types against the params dataclass), the gate's names, the loss and
step conventions, the model, the data, the optimizer config, the output dir, the device
and the seed.
"""

from __future__ import annotations

import dataclasses
import tempfile
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trackcheck.context import ModelFactory, OptimizerFactory
from trackcheck.core import CheckResult, ConfigError, Status
from trackcheck.data.spec import DataSpec
from trackcheck.pipeline import LossFn, Pipeline, PipelineError, StepFn
from trackcheck.registry import CheckSpec, all_checks


class OutputError(ConfigError):
    """The output dir cannot be written (no permission, a file in the way, disk full)."""


@dataclass
class GatePolicy:
    """The gate policy: which results fail the stage. ``required``: check names, or ``all``.
    Configured by ``gate=default|strict`` and ``gate.required=[...]`` (config.GatePolicyConfig,
    conf/gate/); not to be confused with the gate command (trackcheck.gate, trackcheck-gate),
    which reads recorded verdicts back."""

    required: Sequence[str] = ("all",)
    fail_on_warn: bool = False

    def failing(
        self, results: Iterable[CheckResult], preconditions: Iterable[str] = ()
    ) -> list[str]:
        """The checks that fail the gate. A failed precondition always does: the required
        checks after it were skipped, and a skip must not pass for them."""
        bad = {Status.FAIL, Status.ERROR} | ({Status.WARN} if self.fail_on_warn else set())
        req = set(self.required) | set(preconditions)
        return [r.name for r in results if r.status in bad and ("all" in req or r.name in req)]


Gate = GatePolicy  # the name users import (trackcheck.Gate)


@dataclass
class Plan:
    """Everything validated before any compute: the checks in order, each with its params."""

    specs: list[CheckSpec]
    params: dict[str, Any]
    gate: GatePolicy


def select_checks(selection: str | Sequence[str] = "all") -> list[CheckSpec]:
    """``all``, ``fast``, or check names (which may include those two words)."""
    registry = all_checks()
    names = [selection] if isinstance(selection, str) else list(selection)
    chosen: list[str] = []
    for n in names:
        if n == "all":
            picked = list(registry)
        elif n == "fast":
            picked = [k for k, s in registry.items() if s.fast]
        elif n in registry:
            picked = [n]
        else:
            known = ", ".join(registry)
            raise ConfigError(f"unknown check {n!r} in checks.run; available: {known}")
        chosen += [p for p in picked if p not in chosen]
    return [registry[n] for n in registry if n in chosen]  # checklist order


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits the annotation ``tp`` (the plain types params use; anything
    more exotic is accepted rather than refused)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):  # an int is a fine float; a bool is neither
        number = (int, float) if tp is float else (int,)
        return isinstance(value, number) and not isinstance(value, bool)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            return False
        homogeneous = len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis)
        return not homogeneous or all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return not isinstance(tp, type) or isinstance(value, tp)


def make_params(spec: CheckSpec, given: Any) -> Any:
    """The check's params dataclass from ``given`` (a dict, the dataclass, or None), each
    value checked against its field's type; ConfigError naming ``checks.<name>.<param>``."""
    if given is None:
        return spec.params()
    if dataclasses.is_dataclass(given) and not isinstance(given, type):
        params = given
    else:
        try:
            params = spec.params(**dict(given))
        except TypeError as e:
            raise ConfigError(f"checks.{spec.name}: {e}") from e
    try:
        hints = typing.get_type_hints(type(params))
    except Exception:  # noqa: BLE001 - an annotation we cannot resolve is not checked
        return params
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if f.name in hints and not _type_ok(value, hints[f.name]):
            shown = getattr(hints[f.name], "__name__", None) or str(hints[f.name])
            raise ConfigError(
                f"checks.{spec.name}.{f.name}={value!r}: expected {shown} "
                f"(default {getattr(spec.params(), f.name)!r})"
            )
    return params


def validate(
    checks: str | Sequence[str], params: dict[str, Any] | None, gate: GatePolicy | None
) -> Plan:
    """Every choice a user can get wrong, checked before the first model is built."""
    specs = select_checks(checks)
    if not specs:
        raise ConfigError("checks.run selects no check: name at least one, or use all / fast")
    registry = all_checks()
    given = params or {}
    unknown = [n for n in given if n not in registry]
    if unknown:
        raise ConfigError(
            f"params given for unknown check(s) {unknown}; available: {list(registry)}"
        )
    # every given params block is checked, selected or not: a typo is found either way
    built = {name: make_params(registry[name], p) for name, p in given.items()}
    built = {s.name: built[s.name] if s.name in built else make_params(s, None) for s in specs}
    gate = gate or GatePolicy()
    required = [gate.required] if isinstance(gate.required, str) else list(gate.required)
    gate = dataclasses.replace(gate, required=required)
    typos = [n for n in required if n != "all" and n not in registry]
    if typos:
        raise ConfigError(
            f"gate.required names unknown check(s) {typos}; available: {list(registry)}"
        )
    chosen = {s.name for s in specs}
    unselected = [n for n in required if n != "all" and n not in chosen]
    if unselected:
        raise ConfigError(
            f"gate.required names {unselected}, which checks.run does not select: the gate "
            "would never see them. Add them to checks.run or drop them from gate.required"
        )
    return Plan(specs, built, gate)


# the largest stage seed: checks derive their streams as seed + a small offset (< 2**20) and
# torch.manual_seed takes at most 2**64 - 1; 2**62 leaves room for both with a round number
MAX_SEED = 2**62


def check_pretrained(value: object) -> bool | None:
    """``pretrained``: True, False or None (detect), or ConfigError naming it."""
    if value is None or isinstance(value, bool):
        return value
    raise ConfigError(
        f"pretrained={value!r}: expected true (the model loads trained weights), false "
        "(random init) or null (tell from the factory)"
    )


def check_seed(seed: object) -> int:
    """The stage seed, or ConfigError naming it: an int in [0, 2**62] (not a bool or float:
    ``seed=1e23`` would overflow in every check)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"seed={seed!r}: expected an integer in [0, 2**62], e.g. seed=0")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"seed={seed}: out of range, expected an integer in [0, 2**62]")
    return int(seed)


# device types a model can be trained on, with their availability probes (cuda: below)
RUNS_ON: dict[str, Callable[[], bool]] = {
    "cpu": lambda: True,
    "cuda": torch.cuda.is_available,
    "mps": lambda: torch.backends.mps.is_available(),
    "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``...; ConfigError
    for a name torch does not know or a device this machine does not have."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(
            f"device={device!r} is not a device name: use auto, cpu, cuda or cuda:N"
        ) from e
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(
                f"device={device} asked for, but CUDA is not available here: use device=auto "
                "(or device=cpu)"
            )
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"device={device}: this machine has {n} CUDA device(s), 0..{n - 1}")
    elif dev.type not in RUNS_ON:
        raise ConfigError(f"device={device}: trackcheck runs on {', '.join(RUNS_ON)} (or auto)")
    elif not RUNS_ON[dev.type]():
        raise ConfigError(f"device={device} asked for, but it is not available here: use auto")
    return dev


def check_data(data: Any) -> DataSpec:
    """``data`` as a DataSpec whose splits and sizes hold up (``DataSpec.validate``)."""
    if not isinstance(data, DataSpec):
        raise ConfigError(f"data must be a trackcheck DataSpec (from_datasets), not {type(data)}")
    data.validate()
    return data


def as_factory(model: ModelFactory | nn.Module) -> ModelFactory:
    if isinstance(model, nn.Module):
        import copy

        # one instance: every check gets a copy of the same init (a factory is better:
        # it lets determinism verify that the seed reaches the init, and tells a random
        # init from loaded weights: checks/_shared/_pretrained.py)
        def copies() -> nn.Module:
            return copy.deepcopy(model)

        copies.copies_an_instance = True  # type: ignore[attr-defined]
        return copies
    if not callable(model):
        raise ConfigError(
            f"model must be an nn.Module or a callable that builds one, not {type(model).__name__}"
        )
    return model


def make_pipeline(
    pipeline: Pipeline | None, loss: LossFn | str | None, step: StepFn | None
) -> Pipeline:
    """The pipeline conventions, with ``loss=`` / ``step=`` given directly folded in."""
    pipe = dataclasses.replace(pipeline) if pipeline is not None else Pipeline()
    try:
        if loss is not None:
            pipe.loss = loss
        if step is not None:
            pipe.step = step
        pipe.__post_init__()  # validates the loss spelling
    except PipelineError as e:
        raise ConfigError(str(e)) from e
    if pipe.loss is not None and not callable(pipe.loss) and not pipe.model_loss:
        raise ConfigError(f"loss must be callable(output, target), 'model' or None: {loss!r}")
    if pipe.loss_takes == "whole" and not callable(pipe.loss):
        raise ConfigError(
            "pipeline.loss_takes=whole gives your own loss the model's whole output: set loss= "
            "to a callable loss(output, target) (the task's and the model's own losses take "
            "the prediction)"
        )
    if pipe.step is not None and not callable(pipe.step):
        raise ConfigError(f"step must be callable(model, batch, optimizer): {step!r}")
    return pipe


def probe_optimizer(factory: OptimizerFactory) -> None:
    """Build the optimizer once on a dummy parameter: a broken ``optim`` config fails here in
    one line, before any compute, and PyTorch's one-time optimizer imports (about 2 s on a
    small CPU) are paid here instead of inside the first check's time."""
    try:
        factory([nn.Parameter(torch.zeros(1))])
    except Exception as e:  # noqa: BLE001 - any failure means the optim config is unusable
        raise ConfigError(f"the optimizer could not be built: {type(e).__name__}: {e}") from e


def output_dir_of(output_dir: str | Path | None) -> Path:
    """The output dir, created and proven writable (a probe file), before any compute."""
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="trackcheck-"))
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".trackcheck-probe-") as f:
            f.write(b"probe")
            f.flush()
    except OSError as e:
        raise OutputError(
            f"the output dir {out} cannot be written ({e.strerror or e}): fix its permissions "
            "or pick another (output_dir=, or hydra.run.dir= on the command line)"
        ) from e
    return out
