"""Run the checklist on a Hugging Face ``Trainer`` before ``train()``; a failed gate stops it.

One line in your code::

    from trackcheck.integrations.hf import TrackcheckCallback

    trainer = Trainer(model, args, train_dataset=train, eval_dataset=val,
                      callbacks=[TrackcheckCallback()])  # or trainer.add_callback(...)
    trainer.train()  # the checks run first; training only if they pass

Or, returning the Report without training::

    report = check_trainer(trainer, checks="fast")

What the checks then see is what the Trainer would train:

- fresh models: ``model_init()`` when the Trainer has one, else deep copies of
  ``trainer.model`` as it is before training (its own init);
- the Trainer's training and evaluation datasets through its data collator (with its
  unused columns removed), at ``per_device_train_batch_size``;
- the loss of the Trainer's own ``compute_loss`` (a subclass's override, a
  ``compute_loss_func``, label smoothing included) as the training step's loss, clipped at
  ``max_grad_norm``; where ``compute_loss`` is overridden its loss is also read as a
  function of the model's logits, so the contract judges its reduction and what it expects;
- the optimizer the Trainer creates (``create_optimizer``: ``optim``, ``learning_rate``,
  ``weight_decay`` on its decay parameters, ``adam_*``), at its configured lr (the schedule
  is not stepped: a warmup would hide the wiring the checks test);
- the device of ``TrainingArguments``; with ``report_to`` MLflow or W&B, the run the Trainer
  opened (trackcheck's tracker attaches to it, results under ``sanity``).

The report goes to ``<output_dir>/trackcheck/report.json``. A failed gate raises
``SanityCheckFailed`` (a SystemExit with the CLI's exit code) before the first step.
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackcheck.core import ConfigError, Report
from trackcheck.integrations import _common
from trackcheck.integrations.lightning import SanityCheckFailed
from trackcheck.pipeline import Pipeline, PipelineError

try:  # the callback's base class; trackcheck itself never needs transformers
    from transformers import TrainerCallback as _Callback
except ImportError:  # pragma: no cover
    _Callback = object  # type: ignore[assignment,misc]

__all__ = ["SanityCheckFailed", "TrackcheckCallback", "build_stage", "check_trainer"]


class _Stage:
    """Fresh models, the optimizer, the step and the loss, all from one Trainer."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.owners = _common.Owners()
        self.pristine: Any = None if trainer.model_init else copy.deepcopy(trainer.model).cpu()

    def new_model(self) -> nn.Module:
        t = self.trainer
        model = t.call_model_init() if t.model_init else copy.deepcopy(self.pristine)
        return self.owners.add(model)

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The Trainer's ``create_optimizer`` for the model owning ``params`` (its decay
        groups by name); for other parameters its optimizer class and settings."""
        params = list(params)
        model = self.owners.find(params)
        t = self.trainer
        if model is None:
            cls, kwargs = t.get_optimizer_cls_and_kwargs(t.args)
            return cls(params, **kwargs)  # type: ignore[no-any-return]
        saved = t.optimizer
        t.optimizer = None  # create_optimizer builds only when the Trainer has none
        try:
            return t.create_optimizer(model)  # type: ignore[no-any-return]
        finally:
            t.optimizer = saved

    def step(self, model: nn.Module, batch: Any, opt: torch.optim.Optimizer) -> Tensor:
        """The Trainer's step in miniature: compute_loss, backward, clip, optimizer step."""
        t = self.trainer
        opt.zero_grad(set_to_none=True)
        with t.compute_loss_context_manager():
            loss = t.compute_loss(model, dict(batch))  # a copy: compute_loss may pop labels
        loss.backward()
        if t.args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.args.max_grad_norm)
        opt.step()
        return loss.detach()

    def loss(self, data: Any, pipe: Pipeline, device: torch.device) -> Any:
        """The loss the checks judge: the model's own (``"model"``) under the Trainer's
        default compute_loss, the smoothed cross-entropy under label smoothing, an
        overridden compute_loss read as ``loss(logits, labels)`` (None when it cannot be:
        the checks then judge the task's loss and train through compute_loss alone)."""
        t = self.trainer
        custom = type(t).compute_loss is not _trainer_class().compute_loss
        if not custom and t.compute_loss_func is None:
            eps = t.args.label_smoothing_factor
            return _smoothed(eps) if eps else "model"
        return self._read_loss(data, pipe, device)

    def _read_loss(self, data: Any, pipe: Pipeline, device: torch.device) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        t = self.trainer
        raw = _to(data.head("train", min(8, data.batch_size)), device)
        model = self.new_model().to(device).eval()
        template = pipe.split(raw)
        key = pipe.target_key_in(raw) or "labels"
        with torch.no_grad():
            real = t.compute_loss(model, dict(raw))
            out = pipe.forward(model, template.x)
        injected = _common.InjectedOutput(lambda o: SequenceClassifierOutput(logits=o))
        stand_in = _StandIn(injected, model)

        def put(batch: Any, y: Tensor) -> Any:
            return {**batch, key: pipe.labels_for_model(y)}

        def loss(o: Tensor, y: Tensor) -> Tensor:
            injected.value, injected.calls = o, 0
            v = t.compute_loss(stand_in, _common.batch_like(pipe, template, y, put))
            if injected.calls == 0:
                raise PipelineError("compute_loss did not call the model")
            return v  # type: ignore[no-any-return]

        try:
            with torch.no_grad():
                again = loss(out, template.y)
        except Exception:  # noqa: BLE001 - any failure: the loss cannot be read this way
            return None
        return loss if _common.close_enough(again, real) else None


class _StandIn(nn.Module):
    """The model as compute_loss sees it while its loss is read: the given logits as the
    output, the real model's config and attributes otherwise."""

    def __init__(self, injected: _common.InjectedOutput, model: nn.Module) -> None:
        super().__init__()
        self.injected, self.config = injected, getattr(model, "config", None)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.injected(*args, **kwargs)


def _trainer_class() -> Any:
    from transformers import Trainer

    return Trainer


def _smoothed(eps: float) -> Any:
    def smoothed_cross_entropy(out: Tensor, y: Tensor) -> Tensor:
        # [B, C] or [B, T, V] logits, [B] or [B, T] labels, -100 ignored: the LabelSmoother
        return F.cross_entropy(out.flatten(0, -2), y.flatten(), label_smoothing=eps)

    return smoothed_cross_entropy


def _to(batch: Any, device: torch.device) -> Any:
    from trackcheck.integrations.lightning import _to as to

    return to(batch, device)


def _loaders(trainer: Any) -> tuple[Any, Any]:
    train = trainer.get_train_dataloader()
    try:
        val = trainer.get_eval_dataloader() if trainer.eval_dataset is not None else None
    except (ValueError, TypeError):
        val = None
    return train, val


def _task(model: nn.Module, pipe: Pipeline, first: Any) -> tuple[str, int]:
    """Causal LM when the labels are the inputs (the Hugging Face convention: the model
    shifts them), else what the logits and labels tell (integrations._common.infer_task)."""
    b = pipe.split(first)
    with torch.no_grad():
        out = pipe.forward(model.eval(), b.x)
    ids = b.x.get("input_ids") if isinstance(b.x, dict) else None
    if isinstance(ids, Tensor) and b.y.shape == ids.shape and out.ndim == 3:
        keep = b.y != pipe.ignore_index
        if bool((b.y[keep] == ids[keep]).all()):
            return "lm", int(out.shape[-1])
    return _common.infer_task(out, b.y)


def build_stage(
    trainer: Any,
    task: str | None = None,
    num_outputs: int | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``trackcheck.run`` for ``trainer``."""
    device = torch.device(trainer.args.device)
    stage = _Stage(trainer)
    train, val = _loaders(trainer)
    pipe = Pipeline()
    first = _to(next(iter(train)), device)
    if task is None:
        task, num_outputs = _task(stage.new_model().to(device), pipe, first)
    data = _common.loader_spec(
        train, val, task, num_outputs or 1, kind or _common.infer_kind(pipe.split(first).x)
    )
    data.batch_size = int(trainer.args.per_device_train_batch_size)
    pipe.task_name = task
    return {
        "model": stage.new_model,
        "data": data,
        "step": stage.step,
        "optimizer": stage.optimizer,
        "loss": stage.loss(data, pipe, device),
        "device": device,
    }


def _tracker(trainer: Any) -> str | None:
    """``auto`` (the run the Trainer's MLflow or W&B callback opened) when it reports there."""
    report_to = trainer.args.report_to or []
    return "auto" if {"mlflow", "wandb"} & set(report_to) else None


def check_trainer(
    trainer: Any,
    *,
    task: str | None = None,
    num_outputs: int | None = None,
    kind: str | None = None,
    **run_kwargs: Any,
) -> Report:
    """The checklist on what ``trainer`` would train; ``run_kwargs`` go to ``trackcheck.run``
    (checks, params, gate, seed, tracker, output_dir, progress)::

        report = check_trainer(trainer, checks="fast", tracker=None)
        assert report.passed, report.gated_on
    """
    import trackcheck

    stage = build_stage(trainer, task, num_outputs, kind)
    run_kwargs.setdefault("tracker", _tracker(trainer))
    run_kwargs.setdefault("output_dir", Path(trainer.args.output_dir) / "trackcheck")
    return trackcheck.run(**stage, **run_kwargs)


def _calling_trainer() -> Any:
    """The Trainer whose callback handler is calling: a TrainerCallback is given the model
    and loaders, not the Trainer, and the checks need its compute_loss and optimizer."""
    cls = _trainer_class()
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, cls):
            return candidate
        frame = frame.f_back
    return None


class TrackcheckCallback(_Callback):  # type: ignore[misc,valid-type]
    """Runs the checklist in ``on_train_begin`` (module docstring). ``checks``: ``all``,
    ``fast`` or check names; ``params``/``gate``/``seed``/``progress``: as in
    ``trackcheck.run``; ``task``/``num_outputs``/``kind``: where the logits and labels do
    not tell."""

    def __init__(
        self,
        checks: str | Sequence[str] = "all",
        params: dict[str, Any] | None = None,
        gate: dict[str, Any] | None = None,
        seed: int = 0,
        task: str | None = None,
        num_outputs: int | None = None,
        kind: str | None = None,
        progress: bool = True,
    ) -> None:
        self.checks = [checks] if isinstance(checks, str) else list(checks)
        self.params, self.gate, self.seed, self.progress = params, gate, seed, progress
        self.task, self.num_outputs, self.kind = task, num_outputs, kind
        self.report: Report | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from trackcheck.validate import GatePolicy
        from trackcheck.verdict import error, exit_code, one_line, report_error

        trainer = _calling_trainer()
        if trainer is None:
            raise ConfigError(
                "TrackcheckCallback found no Trainer calling it: call "
                "trackcheck.integrations.hf.check_trainer(trainer) before trainer.train()"
            )
        if not state.is_world_process_zero:
            return  # rank 0 runs the stage; a failure there stops the job
        try:
            self.report = check_trainer(
                trainer,
                task=self.task,
                num_outputs=self.num_outputs,
                kind=self.kind,
                checks=self.checks,
                params=self.params,
                gate=GatePolicy(**self.gate) if self.gate else None,
                seed=self.seed,
                progress=self.progress,
                run_name="sanity",
            )
        except (ConfigError, PipelineError) as e:
            error(e)
            raise SanityCheckFailed(2, one_line(e)) from e
        if not self.report.passed:
            report_error(self.report)
            message = (
                f"trackcheck: gate failed on {', '.join(self.report.gated_on)}; training "
                f"stops before its first step (report: {self.report.output_dir}/report.json)"
            )
            print(message, file=sys.stderr)
            raise SanityCheckFailed(exit_code(self.report), message, self.report)
