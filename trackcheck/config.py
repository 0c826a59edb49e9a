"""Structured configs: the schema Hydra validates the composed config against.

The ``checks`` node is built from the registry, one typed field per check (its params
dataclass), so ``checks.overfit_batch.max_stepz=5`` or ``checks.overfit_batch.max_steps=abc``
fails at startup with Hydra's own message naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trackcheck.names import DEFAULT_LR, DEFAULT_OPTIMIZER
from trackcheck.registry import all_checks


@dataclass
class GateConfig:
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


def checks_schema() -> type:
    """``run`` (all | fast | names) plus one params field per registered check."""
    fields: list[tuple[str, Any, Any]] = [
        ("run", list[str], field(default_factory=lambda: ["all"])),
    ]
    for name, spec in all_checks().items():
        fields.append((name, spec.params, field(default_factory=spec.params)))
    return dataclasses.make_dataclass("ChecksConfig", fields)


def schema() -> type:
    """The whole config's schema. ``model``/``data``/``tracker`` are ``_target_`` nodes."""
    checks = checks_schema()
    return dataclasses.make_dataclass(
        "TrackcheckConfig",
        [
            ("model", Any, None),
            ("data", Any, None),
            ("tracker", Any, None),
            ("checks", checks, field(default_factory=checks)),
            ("gate", GateConfig, field(default_factory=GateConfig)),
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
            ("device", str, "auto"),  # auto: CUDA when available, else CPU
            ("progress", bool, True),
            ("train", Any, None),  # optional: the user's training function, run on a pass
            # optional: a loop-based reference implementation, a callable (model, x) -> output
            # (_target_ with _partial_: true); vectorized_equivalence compares against it
            ("reference", Any, None),
            ("sweep", SweepConfig, field(default_factory=SweepConfig)),
        ],
    )
