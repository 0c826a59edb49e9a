"""Gate YOUR Hydra training app: the sanity stage runs as each job starts; a failure stops it.

No code changes, only config::

    # your_app/conf/config.yaml
    hydra:
      callbacks:
        trackcheck:
          _target_: trackcheck.callbacks.TrackcheckCallback
          model: model          # the key of your model node: a _target_ to a torch.nn.Module
          data: sanity_data     # the key of a node that builds a trackcheck DataSpec
          checks: [fast]

What it reads from each job's config (dotted keys allowed, e.g. ``model: net.backbone``):

- ``model`` (required): a ``_target_`` node for your ``torch.nn.Module``; trackcheck builds a
  fresh one per check (``_partial_``), so the node must build a complete model by itself.
- ``data`` (required): a node whose ``_target_`` returns a ``trackcheck.DataSpec``, usually
  ``trackcheck.data.from_datasets`` around your datasets (docs/model-and-data.md).
- ``optim`` (optional, default key ``optim``; null to ignore): a torch.optim node; trackcheck
  adds ``_partial_: true``. When the key is absent the checks use Adam at names.DEFAULT_LR (3e-3).

Everything else comes from the callback's own parameters below. The stage's report.json goes
to ``<job output dir>/trackcheck/``.

Hydra turns an exception in a callback into a warning and runs the job anyway, so a failed
stage ends the process with ``SystemExit``: exit code 1 for a failed gate; 2 for bad input (a
node that cannot be built, a wrong param, a broken pipeline contract), with one line saying
why. In a multirun of your app that stops the whole sweep at the first failed job;
``python -m trackcheck -m ...`` gates every config of a sweep without stopping.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from trackcheck import names
from trackcheck.cli import EXIT_USAGE, UsageError, build_and_run, error, exit_code, report_error
from trackcheck.config import schema
from trackcheck.core import ConfigError, Report
from trackcheck.redact import redact_args


class SanityCheckFailed(SystemExit):
    """The stage failed (or could not be built): the job stops before the user's code runs."""


def _plain(value: Any) -> Any:
    """Hydra hands callback params over as DictConfig/ListConfig: make them plain Python."""
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


class TrackcheckCallback(Callback):
    """Runs the sanity stage in ``on_job_start`` on the job's own nodes (module docstring)."""

    def __init__(
        self,
        model: str = "model",
        data: str = "data",
        optim: str | None = "optim",
        checks: str | Sequence[str] = ("fast",),
        params: Mapping[str, Any] | None = None,
        gate: Mapping[str, Any] | None = None,
        tracker: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: str = "auto",
        progress: bool = True,
    ) -> None:
        """``model``/``data``/``optim``: keys in the job's config. ``checks``: ``all``,
        ``fast`` or check names. ``params``: per-check parameters
        (``{overfit_batch: {max_steps: 200}}``). ``gate``: ``{required: [...],
        fail_on_warn: ...}``. ``tracker``: a trackcheck tracker node (e.g.
        ``{_target_: trackcheck.trackers.mlflow.MLflowTracker}``); null logs nowhere but
        report.json."""
        self.model, self.data, self.optim = model, data, optim
        checks = _plain(checks)
        self.checks = [checks] if isinstance(checks, str) else list(checks)
        self.params = dict(_plain(params) or {})
        self.gate = dict(_plain(gate) or {})
        self.tracker = _plain(tracker)
        self.seed, self.device, self.progress = seed, device, progress

    @staticmethod
    def _node(job: DictConfig, key: str, param: str) -> Any:
        node = OmegaConf.select(job, key)
        if node is None:
            raise UsageError(
                f"TrackcheckCallback: the job's config has no {key!r} node; point the "
                f"callback's {param!r} parameter at the key that holds it"
            )
        # resolved against the job's config: the node's interpolations (${data.classes}) work
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    def stage_config(self, job: DictConfig) -> DictConfig:
        """A trackcheck config (validated against its schema) from the job's own nodes."""
        node: dict[str, Any] = {
            "model": self._node(job, self.model, "model"),
            "data": self._node(job, self.data, "data"),
            "checks": {"run": self.checks, **self.params},
            "gate": self.gate,
            "tracker": self.tracker,
            "seed": self.seed,
            "device": self.device,
            "progress": self.progress,
        }
        if self.optim and OmegaConf.select(job, self.optim) is not None:
            node["optim"] = {**self._node(job, self.optim, "optim"), "_partial_": True}
        return OmegaConf.merge(OmegaConf.structured(schema()), node)  # type: ignore[return-value]

    def run_stage(self, job: DictConfig) -> Report:
        out = Path(job.hydra.runtime.output_dir) / "trackcheck"
        # sanity-<job>[-<model>-<data>]-<overrides>: a multirun's jobs get names that tell
        # them apart; the model and data choices when they are config groups (model=resnet)
        choices = OmegaConf.select(job, "hydra.runtime.choices", default={})
        label = "-".join(str(x) for x in (job.hydra.job.name, choices.get(self.model)) if x)
        overrides = redact_args(OmegaConf.select(job, "hydra.overrides.task", default=[]))
        name = names.run_name(label, choices.get(self.data), overrides)
        return build_and_run(self.stage_config(job), str(out), name)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            report = self.run_stage(config)
        except Exception as e:  # noqa: BLE001 - Hydra would make it a warning and train anyway
            error(e if isinstance(e, UsageError | ConfigError) else f"{type(e).__name__}: {e}")
            raise SanityCheckFailed(EXIT_USAGE) from e
        if not report.passed:
            report_error(report)  # the broken contract's line, if that is why
            print(
                f"trackcheck: gate failed on {', '.join(report.gated_on)}; the job stops "
                f"before training (report: {report.output_dir}/report.json)",
                file=sys.stderr,
            )
            raise SanityCheckFailed(exit_code(report))
