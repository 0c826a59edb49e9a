"""The Hydra entry point: compose the config, build plain objects, run the stage, exit code.

Only this module (and the Hydra callback) import Hydra; ``trackcheck.run`` takes the objects
built here. Exit codes: 0 the gate passed, 1 it failed (or Hydra rejected the config),
2 the model/data/tracker could not be built (the one-line error says why).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from trackcheck.config import schema
from trackcheck.core import Report
from trackcheck.data.spec import DataSpec
from trackcheck.registry import all_checks
from trackcheck.runner import Gate, run

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _available_models() -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    if gh.is_initialized():
        return sorted(gh.config_loader().get_group_options("model"))
    return sorted(p.stem for p in (Path(__file__).parent / "conf" / "model").glob("*.yaml"))


def _instantiate(node: Any, what: str, **kwargs: Any) -> Any:
    try:
        return instantiate(node, **kwargs)
    except Exception as e:  # Hydra wraps the real cause; show it on one line
        cause = e.__cause__ or e
        raise UsageError(
            f"could not build {what} from its config: {type(cause).__name__}: {cause}"
        ) from e


def build_data(cfg: DictConfig) -> DataSpec:
    data = _instantiate(cfg.data, "data")
    if not isinstance(data, DataSpec):
        raise UsageError(
            f"data._target_ returned {type(data).__name__}, not a trackcheck DataSpec: wrap your "
            "datasets with _target_: trackcheck.data.from_datasets (see README)"
        )
    return data


def build_model_factories(
    cfg: DictConfig, data: DataSpec
) -> tuple[Callable[[], Any], Callable[[], Any] | None]:
    """The model factory, and the bigger one from ``model.bigger`` overrides (if given).

    ``out_bias: auto`` is replaced by the bias that carries the train-set prior.
    """
    node = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(node, dict)
    bigger = node.pop("bigger", None)
    if node.get("out_bias") == "auto":
        node["out_bias"] = data.task.prior_bias(data.task.prior(data.targets())).tolist()
    node["_partial_"] = True
    factory = _instantiate(node, "model")
    big = _instantiate({**node, **bigger}, "model.bigger") if bigger else None
    return factory, big


def build_and_run(cfg: DictConfig, output_dir: str, run_name: str) -> Report:
    """``train(cfg)`` in lightning-hydra-template terms: everything but Hydra's own plumbing."""
    data = build_data(cfg)
    factory, bigger = build_model_factories(cfg, data)
    optim = _instantiate(cfg.optim, "optim")
    tracker = _instantiate(cfg.tracker, "tracker") if cfg.tracker is not None else None
    reference = _instantiate(cfg.reference, "reference") if cfg.get("reference") else None
    params = {name: OmegaConf.to_object(cfg.checks[name]) for name in all_checks()}
    config = {str(k): v for k, v in OmegaConf.to_container(cfg, resolve=True).items()}  # type: ignore[union-attr]
    return run(
        factory,
        data,
        checks=list(cfg.checks.run),
        params=params,
        optimizer=optim,
        device=cfg.device,
        seed=cfg.seed,
        gate=Gate(required=list(cfg.gate.required), fail_on_warn=cfg.gate.fail_on_warn),
        tracker=tracker,
        output_dir=output_dir,
        config=config,
        bigger_model=bigger,
        reference_fn=reference,
        run_name=run_name,
        progress=cfg.progress,
    )


def no_model_message() -> str:
    models = ", ".join(_available_models()) or "(none found)"
    return (
        "no model selected. Pick one with +model=NAME, e.g.\n"
        "    python -m trackcheck +model=resnet\n"
        f"available models: {models}\n"
        "your own: add a model/NAME.yaml under --config-dir (or hydra.searchpath) with a "
        "_target_ to your torch.nn.Module"
    )


_exit_code = EXIT_PASSED


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def hydra_main(cfg: DictConfig) -> str | None:
    global _exit_code
    if cfg.model is None:
        print(f"trackcheck: error: {no_model_message()}", file=sys.stderr)
        _exit_code = EXIT_USAGE
        return None
    hc = HydraConfig.get()
    run_name = f"sanity-{hc.runtime.choices.get('model', 'model')}"
    try:
        report = build_and_run(cfg, hc.runtime.output_dir, run_name)
    except UsageError as e:
        print(f"trackcheck: error: {e}", file=sys.stderr)
        _exit_code = EXIT_USAGE
        return None
    _exit_code = EXIT_PASSED if report.passed else EXIT_FAILED
    return report.status


def register_configs() -> None:
    ConfigStore.instance().store(name="trackcheck_schema", node=schema())


def main() -> None:
    register_configs()
    hydra_main()
    sys.exit(_exit_code)
