"""Structured configs: the schema Hydra validates the composed config against.

The ``checks`` node is built from the registry, one typed field per check (its params
dataclass), so ``checks.overfit_batch.max_stepz=5`` or ``checks.overfit_batch.max_steps=abc``
fails at startup with Hydra's own message naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackcheck.names import DEFAULT_LR, DEFAULT_OPTIMIZER
from trackcheck.registry import CheckSpec, all_checks, plugins


@dataclass
class GatePolicyConfig:
    """The gate policy (``gate=``, conf/gate/): validate.GatePolicy's fields."""

    # check names whose fail/error fails the stage; "all" = every check that ran
    required: list[str] = field(default_factory=lambda: ["all"])
    fail_on_warn: bool = False


@dataclass
class SweepConfig:
    """Multirun (``-m``) behaviour; a single run ignores it (see trackcheck.sweep)."""

    # the sweep's name: the W&B group and the MLflow parent run's name.
    # null: <hydra.job.name>-<date>-<time>-<6 random hex digits>
    id: str | None = None
    # after the first failed job, the jobs not yet started are skipped (running ones finish)
    fail_fast: bool = False
    # what a failed job returns to an optimising sweeper (Optuna): the worst value, so the
    # search steers away. inf for direction=minimize, -inf for maximize, a list for several
    # objectives. Never nan: Optuna marks a nan trial FAIL and hydra-optuna-sweeper then
    # aborts the sweep (max_failure_rate defaults to 0).
    failed_value: Any = float("inf")


@dataclass
class PipelineConfig:
    """How batches and outputs are read (trackcheck.pipeline.Pipeline has the details)."""

    target_key: str | None = None  # dict batches: the target's key; null: labels, label, ...
    # dict batches: the keys given to the model as keyword inputs; null: all but the target
    input_keys: list[str] | None = None
    output_key: str | None = None  # dict / ModelOutput outputs: null = logits or the only tensor
    shift_labels: bool | None = None  # LM dict batches: null = shift by one (Hugging Face)
    ignore_index: int = -100  # targets with this value carry no target (padding)
    mask_key: str | None = "attention_mask"  # where it is 0 the target is ignored
    # what the loss reads the model's output as: logits, probs (sigmoid + nn.BCELoss, softmax
    # + MSE) or log_probs (log_softmax + F.nll_loss); null: detected from the loss and outputs
    output_domain: str | None = None
    # false: a sequence-first model, reading [T, B, ...] and returning [T, B, ...] or
    # [T*B, ...] (nn.Transformer's default, PyTorch's word-language-model example)
    batch_first: bool = True
    # what the loss is given: prediction (the tensor above), or whole: the model's whole
    # output as it returns it (a VAE's (recon, mu, logvar)), for a loss(output, target) that
    # reads several of its elements
    loss_takes: str = "prediction"
    output_index: int = 0  # tuple outputs: the element that is the prediction


def checks_schema(specs: Iterable[CheckSpec] | None = None) -> type:
    """``run`` (all | fast | names) plus one params field per check (every registered one)."""
    fields: list[tuple[str, Any, Any]] = [
        ("run", list[str], field(default_factory=lambda: ["all"])),
    ]
    for spec in all_checks().values() if specs is None else specs:
        fields.append((spec.name, spec.params, field(default_factory=spec.params)))
    return dataclasses.make_dataclass("ChecksConfig", fields)


def schema() -> type:
    """The whole config's schema. ``model``/``data``/``tracker`` are ``_target_`` nodes."""
    checks = checks_schema()
    return _schema(checks, field(default_factory=checks))


def help_schema() -> type:
    """The schema ``--help`` prints: the checks node from trackcheck._schema_cache, plain
    defaults, so help needs neither torch nor any check module (seconds saved). With a
    check plugin installed (entry points), the live schema: the cache has built-ins only."""
    if plugins():
        return schema()
    from trackcheck._schema_cache import CHECKS

    return _schema(dict[str, Any], field(default_factory=lambda: copy.deepcopy(CHECKS)))


def _schema(checks: Any, checks_default: Any) -> type:
    return dataclasses.make_dataclass(
        "TrackcheckConfig",
        [
            ("model", Any, None),
            ("data", Any, None),
            ("tracker", Any, None),
            ("checks", checks, checks_default),
            ("gate", GatePolicyConfig, field(default_factory=GatePolicyConfig)),
            # the optimizer the checks train with; any torch.optim class via _target_
            (
                "optim",
                dict[str, Any],
                field(
                    default_factory=lambda: {
                        "_target_": DEFAULT_OPTIMIZER,
                        "_partial_": True,
                        "lr": DEFAULT_LR,
                    }
                ),
            ),
            # the loss the checks train and measure with: null = the task's (cross-entropy,
            # BCE with logits, MSE); a _target_ (torch.nn.CrossEntropyLoss, or a function with
            # _partial_: true) called as loss(output, target); "model" = the model's own .loss
            ("loss", Any, None),
            # optional: your training step, step(model, batch, optimizer) -> loss
            # (_target_ with _partial_: true); the checks that train call it
            ("step", Any, None),
            ("pipeline", PipelineConfig, field(default_factory=PipelineConfig)),
            ("seed", int, 0),
            # the model loads trained weights (a checkpoint, a pretrained backbone with a new
            # head): true, false, or null to tell from two builds with different seeds
            ("pretrained", Any, None),
            ("device", str, "auto"),  # auto: CUDA when available, else CPU
            ("progress", bool, True),
            # torch threads per job: auto = its share of the cores when jobs run in parallel
            # (trackcheck.threads), 0 = torch's default, N = N threads
            ("threads", str, "auto"),
            ("train", Any, None),  # optional: the user's training function, run on a pass
            # optional: a loop-based reference implementation, a callable (model, x) -> output
            # (_target_ with _partial_: true); vectorized_equivalence compares against it
            ("reference", Any, None),
            ("sweep", SweepConfig, field(default_factory=SweepConfig)),
        ],
    )


# --- the cache of the built-in checks' params, for --help ---------------------------------------
CACHE_PATH = Path(__file__).with_name("_schema_cache.py")


def builtin_checks_node() -> dict[str, Any]:
    """The checks node as plain data, built-in checks only (what the cache must equal)."""
    from omegaconf import OmegaConf

    builtin = [s for s in all_checks().values() if s.fn.__module__.startswith("trackcheck.")]
    node = OmegaConf.to_container(OmegaConf.structured(checks_schema(builtin)))
    assert isinstance(node, dict)
    return {str(k): v for k, v in node.items()}


def _literal(value: Any) -> str:
    """``value`` as Python source (double quotes, as ruff format writes them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)  # int, float, bool, None


def write_schema_cache(path: Path = CACHE_PATH) -> None:
    """Regenerate trackcheck/_schema_cache.py from the registry: ``python -m trackcheck.config``
    (tests/test_startup.py says when: a check or a Params default was added or changed)."""
    lines = [
        '"""Generated by ``python -m trackcheck.config``: do not edit. The built-in checks\'',
        "params defaults, so ``--help`` prints the config without importing torch and every",
        'check. tests/test_startup.py fails when this differs from the live registry."""',
        "",
        "from typing import Any",
        "",
        "CHECKS: dict[str, Any] = {",
    ]
    for name, params in builtin_checks_node().items():
        if not isinstance(params, dict):  # "run": ["all"]
            lines.append(f"    {json.dumps(name)}: {_literal(params)},")
            continue
        if not params:
            lines.append(f"    {json.dumps(name)}: {{}},")
            continue
        lines.append(f"    {json.dumps(name)}: {{")
        lines += [f"        {json.dumps(k)}: {_literal(v)}," for k, v in params.items()]
        lines.append("    },")
    path.write_text("\n".join([*lines, "}", ""]))


if __name__ == "__main__":
    write_schema_cache()
    print(f"wrote {CACHE_PATH}")
