"""Run the checklist on your LightningModule as ``trainer.fit`` starts; a failed gate stops fit.

One line in your code (or your lightning-hydra-template ``callbacks`` config)::

    import lightning as L
    from trackcheck.integrations.lightning import TrackcheckCallback

    trainer = L.Trainer(max_epochs=10, callbacks=[TrackcheckCallback()])
    trainer.fit(model, datamodule=dm)  # the checks run first; training only if they pass

What the checks then see is your module as written:

- fresh copies of the module, each a deep copy of it as ``fit`` got it (its own init);
- its ``training_step`` as the training step, under automatic optimization through its own
  ``optimizer_zero_grad``, ``backward`` and ``optimizer_step`` hooks (and the Trainer's
  ``gradient_clip_val``); under manual optimization the step it writes itself, with
  ``self.optimizers()``, ``self.lr_schedulers()`` and ``self.manual_backward`` working;
- the loss ``training_step`` computes, read as a function of the module's output (the output
  of ``self(x)`` / ``self.forward``): the contract judges its reduction and what it expects;
- the optimizer(s) from its ``configure_optimizers`` (an optimizer, a list, or a dict with
  an ``lr_scheduler``: the schedulers are built, not stepped), with ``self.trainer`` there
  reading the real Trainer (``estimated_stepping_batches``, ``max_epochs``, ``model``);
- the Trainer's training and validation loaders (a DataModule's after its
  ``setup("fit")``), reshuffled by trackcheck's seeded generator;
- ``self.log`` / ``self.log_dict`` accepted and dropped, torchmetrics updating as usual.

The verdict and each check's metrics go to the Trainer's loggers under ``sanity/`` (MLflow,
W&B, CSV, TensorBoard alike), the report to ``<default_root_dir>/trackcheck/report.json``. A
failed gate raises :class:`SanityCheckFailed` (a SystemExit with the CLI's exit code: 1 for a
failed check, 2 when the pipeline's contract fails) before the first training step, after
printing the same one-line reason as the command line. ``fast_dev_run`` runs the stage; under
DDP rank 0 runs it and every rank stops on its verdict; sharded strategies (FSDP, DeepSpeed)
and SyncBatchNorm across processes are refused in one line (:func:`cannot_run`).

Or without a callback, returning the Report::

    report = check_module(model, dm, checks="fast")
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trackcheck.core import ConfigError, Report
from trackcheck.integrations import _common
from trackcheck.pipeline import Pipeline, PipelineError

if TYPE_CHECKING:
    import lightning.pytorch as pl

try:  # the callback's base class; trackcheck itself never needs lightning
    from lightning.pytorch import Callback as _Callback
except ImportError:  # pragma: no cover - only the error message below needs it
    _Callback = object  # type: ignore[assignment,misc]

PREFIX = "sanity/"


class SanityCheckFailed(SystemExit):
    """The stage failed (or could not run): ``fit`` stops before its first training step.
    ``code``: the CLI's exit code; ``message``: the one-line reason; ``report``: the Report
    (None when the stage could not run)."""

    def __init__(self, code: int, message: str, report: Report | None = None) -> None:
        super().__init__(code)
        self.message, self.report = message, report

    def __str__(self) -> str:
        return self.message


# --- the stand-ins a module copy sees where the Trainer's loop would be ------------------------
class _TrainerView:
    """The real Trainer, read-only, as seen from a module copy: ``model`` is the copy and there
    are no loggers (a check's steps must not write into the run)."""

    def __init__(self, trainer: Any, module: nn.Module) -> None:
        self._trainer, self._module = trainer, module

    model = property(lambda self: self._module)
    lightning_module = property(lambda self: self._module)
    logger = property(lambda self: None)
    loggers = property(lambda self: [])

    def __getattr__(self, name: str) -> Any:
        if self._trainer is None:
            raise AttributeError(
                f"the module reads self.trainer.{name}, and check_module was given no "
                "trainer: pass trainer= (or use TrackcheckCallback)"
            )
        return getattr(self._trainer, name)


class _Harness:
    """Builds the module copies the checks train and the step, optimizer and loss they use."""

    def __init__(self, module: Any, trainer: Any) -> None:
        self.trainer = trainer
        self.owners = _common.Owners()
        self.cls = _shimmed_class(type(module), self)
        saved = module.__dict__.get("_trainer")
        module.__dict__["_trainer"] = None  # deepcopy drops it too (LightningModule.__getstate__)
        try:
            self.pristine = copy.deepcopy(module)  # before any check steps: no graph in it
        finally:
            module.__dict__["_trainer"] = saved
        self.pristine.cpu()

    def new_module(self) -> nn.Module:
        m = copy.deepcopy(self.pristine)
        m.__class__ = self.cls
        m._tc_steps = 0
        return self.owners.add(m)

    # --- optimizer ---------------------------------------------------------------------------
    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        from lightning.pytorch.core.optimizer import _configure_optimizers

        params = list(params)
        module: Any = self.owners.find(params)
        if module is None:  # a check's dummy parameter (the optimizer probe), or a stray copy
            return _first_optimizer(self.new_module(), _configure_optimizers, params)
        opts, scheds, _ = _configure_optimizers(module.configure_optimizers())
        module._tc_optimizers, module._tc_schedulers = opts, [_scheduler(s) for s in scheds]
        return opts[0] if len(opts) == 1 else _Joint(opts)

    # --- step --------------------------------------------------------------------------------
    def step(self, module: Any, batch: Any, opt: torch.optim.Optimizer) -> Tensor:
        i = module._tc_steps
        module._tc_steps = i + 1
        try:
            if not module.automatic_optimization:
                module._tc_manual_loss = None
                loss = _loss_of(module.training_step(batch, i)) or module._tc_manual_loss
            else:
                loss = self._automatic(module, batch, i, opt)
        finally:
            _common.release_graphs(module)
        if loss is None:
            raise PipelineError(
                "training_step returned no loss (and called no manual_backward): return the "
                "loss, or a dict with a 'loss' key"
            )
        return loss.detach()

    def _automatic(self, module: Any, batch: Any, i: int, opt: Any) -> Tensor | None:
        """Lightning's automatic optimization, in its order: training_step, zero_grad,
        backward, clipping, all inside the closure ``optimizer_step`` gets."""
        seen: list[Tensor | None] = []
        clip = getattr(self.trainer, "gradient_clip_val", None)

        def closure() -> Tensor | None:
            loss = _loss_of(module.training_step(batch, i))
            seen.append(loss)
            if loss is None:  # Lightning skips the step for a None loss
                return None
            module.optimizer_zero_grad(0, i, opt)
            module.backward(loss)
            if clip:
                algo = getattr(self.trainer, "gradient_clip_algorithm", None) or "norm"
                module.configure_gradient_clipping(opt, clip, algo)
            return loss

        module.optimizer_step(0, i, opt, closure)
        if not seen:  # an optimizer_step override that never ran the closure
            closure()
        return seen[-1]

    # --- the loss training_step computes, as loss(output, target) -----------------------------
    def step_loss(self, data: Any, pipe: Pipeline, device: torch.device) -> Any:
        """``loss(out, y)``: training_step's loss when ``self(x)`` / ``self.forward`` returns
        ``out`` and the batch's target is ``y``; None when training_step does not reach the
        forward (it calls a submodule directly) or its loss does not match, then the checks
        judge the task's loss and train through training_step alone."""
        raw = data.head("train", min(8, data.batch_size))
        module: Any = self.new_module().to(device)
        _common.mute_metrics(module)
        module.eval()  # no dropout: the probe compares two computations of one loss
        injected = _common.InjectedOutput()
        template = pipe.split(_to(raw, device))
        key = pipe.target_key_in(raw) if isinstance(raw, dict) else None
        put = _common.tuple_or_dict_target(key)
        with torch.no_grad():
            real = _loss_of(module.training_step(_to(raw, device), 0))
            out = pipe.forward(module, template.x)
        module.forward = injected  # every self(x) / self.forward(x) returns the given output

        def loss(o: Tensor, y: Tensor) -> Tensor:
            injected.value, injected.calls = o, 0
            v = _loss_of(module.training_step(_common.batch_like(pipe, template, y, put), 0))
            if injected.calls == 0 or v is None:
                raise PipelineError("training_step did not call the module's forward")
            return v

        try:
            with torch.no_grad():
                again = loss(out, template.y)
        except Exception:  # noqa: BLE001 - any failure: the loss cannot be read this way
            return None
        if real is None or injected.calls != 1 or not _common.close_enough(again, real):
            return None
        module.train()
        return loss


def _first_optimizer(module: Any, configure: Any, params: list[Any]) -> torch.optim.Optimizer:
    """The class and settings of the module's first optimizer, over ``params``: for the
    runner's probe, which builds the optimizer on a dummy parameter."""
    opt = configure(module.configure_optimizers())[0][0]
    return type(opt)(params, **opt.defaults)


def _scheduler(s: Any) -> Any:
    return s["scheduler"] if isinstance(s, dict) else s


def _loss_of(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict):
        return out.get("loss")
    return None


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, list | tuple):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


class _Joint(torch.optim.Optimizer):
    """Several optimizers as one (a module configuring one per part, stepped together): their
    param groups are the same dicts, so a check that sets the lr sets it in each."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.optimizers = list(optimizers)
        self.defaults = dict(self.optimizers[0].defaults)
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]
        self.state = {}  # type: ignore[assignment]  # each optimizer keeps its own

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for o in self.optimizers:
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def register_step_post_hook(self, hook: Any) -> Any:
        # once per joint step, after the last optimizer stepped (the contract's clip probe)
        return self.optimizers[-1].register_step_post_hook(hook)


def _shimmed_class(cls: Any, harness: _Harness) -> type:
    """The module's own class with what a Trainer's loop provides standing in: a read-only
    view of the Trainer, ``log`` dropped, the optimizers of the check's optimizer factory.
    A class, not instance attributes, so a check's ``copy.deepcopy`` of a copy keeps them."""

    def trainer(self: Any) -> _TrainerView:
        return _TrainerView(harness.trainer, self)

    def optimizers(self: Any, use_pl_optimizer: bool = True) -> Any:
        opts = self.__dict__.get("_tc_optimizers")
        if opts is None:
            raise PipelineError("self.optimizers() called before configure_optimizers")
        return opts[0] if len(opts) == 1 else opts

    def lr_schedulers(self: Any) -> Any:
        s = self.__dict__.get("_tc_schedulers") or []
        return None if not s else s[0] if len(s) == 1 else s

    def manual_backward(self: Any, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        self._tc_manual_loss = loss
        loss.backward(*args, **kwargs)

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.__dict__["_tc_depth"] = self.__dict__.get("_tc_depth", 0) + 1
        try:
            return nn.Module.__call__(self, *args, **kwargs)
        finally:
            self.__dict__["_tc_depth"] -= 1

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get("_tc_depth", 0):
            return cls.forward(self, *args, **kwargs)
        return self(*args, **kwargs)  # self.forward(x) in a step: through the module's hooks

    def setstate(self: Any, state: dict[str, Any]) -> None:
        cls.__setstate__(self, state)
        harness.owners.add(self)  # a check's deepcopy of a copy builds its own optimizer

    attrs = {
        "trainer": property(trainer, lambda self, value: None),
        "log": _common._nothing,
        "log_dict": _common._nothing,
        "optimizers": optimizers,
        "lr_schedulers": lr_schedulers,
        "manual_backward": manual_backward,
        "__call__": call,
        "forward": forward,
        "__setstate__": setstate,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
    }
    return type(cls.__name__, (cls,), attrs)


# --- data, task, run --------------------------------------------------------------------------
def _loaders(trainer: Any, module: Any, datamodule: Any) -> tuple[Any, Any]:
    """The training loader and the first validation loader fit would use (None: none)."""
    if trainer is not None and datamodule is None:
        fit, val = trainer.fit_loop._data_source, trainer.fit_loop.epoch_loop.val_loop._data_source
        train = fit.dataloader() if fit.is_defined() else None
        valid = val.dataloader() if val.is_defined() else None
    else:
        source = datamodule if datamodule is not None else module
        if datamodule is not None and trainer is None:
            datamodule.setup("fit")
        train = source.train_dataloader()
        try:
            valid = source.val_dataloader()
        except Exception:  # noqa: BLE001 - Lightning's default raises: no validation loader
            valid = None
    if isinstance(valid, list | tuple):
        valid = valid[0] if valid else None
    if not isinstance(train, torch.utils.data.DataLoader):
        raise ConfigError(
            f"trackcheck reads one training DataLoader; train_dataloader() gave "
            f"{type(train).__name__}: return a torch DataLoader"
        )
    return train, valid


def build_stage(
    module: Any,
    datamodule: Any = None,
    trainer: Any = None,
    task: str | None = None,
    num_outputs: int | None = None,
    kind: str | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``trackcheck.run`` for ``module``: model factory, data, step,
    optimizer, loss, device."""
    train, val = _loaders(trainer, module, datamodule)
    device = device or getattr(module, "device", None) or torch.device("cpu")
    harness = _Harness(module, trainer)
    pipe = Pipeline()
    first = pipe.split(_to(next(iter(train)), device))
    if task is None:
        probe = harness.new_module().to(device).eval()
        with torch.no_grad():
            out = pipe.forward(probe, first.x)
        task, num_outputs = _common.infer_task(out, first.y)
    data = _common.loader_spec(
        train, val, task, num_outputs or 1, kind or _common.infer_kind(first.x)
    )
    pipe.task_name = task
    return {
        "model": harness.new_module,
        "data": data,
        "step": harness.step,
        "optimizer": harness.optimizer,
        # manual optimization: training_step steps the optimizer, it cannot just be read
        "loss": harness.step_loss(data, pipe, device) if module.automatic_optimization else None,
        "device": device,
    }


def check_module(
    module: Any,
    datamodule: Any = None,
    trainer: Any = None,
    *,
    task: str | None = None,
    num_outputs: int | None = None,
    kind: str | None = None,
    **run_kwargs: Any,
) -> Report:
    """The checklist on a LightningModule (and its DataModule); ``run_kwargs`` go to
    ``trackcheck.run`` (checks, params, gate, seed, tracker, output_dir, progress)::

        report = check_module(LitModel(), MNISTDataModule(), checks="fast", tracker=None)
        assert report.passed, report.gated_on
    """
    import trackcheck

    stage = build_stage(module, datamodule, trainer, task, num_outputs, kind)
    if "device" in run_kwargs:
        stage.pop("device")
    return trackcheck.run(**stage, **run_kwargs)


class TrackcheckCallback(_Callback):  # type: ignore[misc,valid-type]
    """Runs the checklist at ``on_fit_start`` (module docstring); ``checks``: ``all``,
    ``fast`` or check names; ``params``/``gate``/``seed``/``progress``: as in
    ``trackcheck.run``; ``task``/``num_outputs``/``kind``: where the model's output and
    targets do not tell (a sequence tagger); ``output_dir``: default
    ``<default_root_dir>/trackcheck``."""

    def __init__(
        self,
        checks: str | Sequence[str] = "all",
        params: dict[str, Any] | None = None,
        gate: dict[str, Any] | None = None,
        seed: int = 0,
        task: str | None = None,
        num_outputs: int | None = None,
        kind: str | None = None,
        output_dir: str | None = None,
        progress: bool = True,
    ) -> None:
        checks = _common_plain(checks)
        self.checks = [checks] if isinstance(checks, str) else list(checks)
        self.params, self.gate = _common_plain(params), _common_plain(gate)
        self.seed, self.progress, self.output_dir = seed, progress, output_dir
        self.task, self.num_outputs, self.kind = task, num_outputs, kind
        self.report: Report | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        refused = cannot_run(trainer, pl_module)
        if refused:  # every process decides alike: no collective call needed
            if trainer.is_global_zero:
                from trackcheck.verdict import error

                error(refused)
            raise SanityCheckFailed(2, refused)
        code, message = 0, ""
        if trainer.is_global_zero:
            code, message = self._stage(trainer, pl_module)
        if trainer.world_size > 1:  # the other processes wait for rank 0's verdict
            code, message = trainer.strategy.broadcast((code, message), src=0)
        if code:
            raise SanityCheckFailed(code, message, self.report)

    def _stage(self, trainer: pl.Trainer, module: pl.LightningModule) -> tuple[int, str]:
        import trackcheck
        from trackcheck.validate import GatePolicy
        from trackcheck.verdict import error, exit_code, one_line, report_error

        out = Path(self.output_dir or Path(trainer.default_root_dir) / "trackcheck")
        try:
            stage = build_stage(
                module,
                getattr(trainer, "datamodule", None),
                trainer,
                self.task,
                self.num_outputs,
                self.kind,
                module.device,
            )
            self.report = trackcheck.run(
                **stage,
                checks=self.checks,
                params=self.params,
                gate=GatePolicy(**self.gate) if self.gate else None,
                seed=self.seed,
                tracker=None,
                output_dir=out,
                progress=self.progress,
                run_name="sanity",
            )
        except (ConfigError, PipelineError) as e:
            error(e)
            return 2, one_line(e)
        _log_to(trainer, self.report)
        if self.report.passed:
            return 0, ""
        report_error(self.report)
        message = (
            f"trackcheck: gate failed on {', '.join(self.report.gated_on)}; fit stops before "
            f"training (report: {self.report.output_dir}/report.json)"
        )
        print(message, file=sys.stderr)
        return exit_code(self.report), message


# strategies whose module holds a shard of each parameter (or whose optimizer the engine
# owns): a deep copy of the module is not a model trackcheck can train on one device
SHARDED = frozenset(
    {"FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy", "XLAFSDPStrategy"}
)
RUN_ON_ONE_DEVICE = (
    "run the checks on one device first: the same callback with Trainer(devices=1, "
    "strategy='auto'), or check_module(model, datamodule) before fit"
)


def cannot_run(trainer: Any, module: nn.Module) -> str | None:
    """Why the stage cannot run inside this ``fit`` (one line, with what to do), or None.
    ``fast_dev_run`` and DDP run it (rank 0 runs the stage, every rank stops on its
    verdict); sharded strategies and synchronized BatchNorm across processes cannot."""
    strategy = type(getattr(trainer, "strategy", None))
    sharded = SHARDED & {c.__name__ for c in strategy.__mro__}
    if sharded:
        return (
            f"TrackcheckCallback cannot run under {min(sharded)}: each process holds a shard "
            f"of the module, which trackcheck cannot copy and train alone; {RUN_ON_ONE_DEVICE}"
        )
    world = int(getattr(trainer, "world_size", 1) or 1)
    if world > 1 and any(isinstance(m, nn.SyncBatchNorm) for m in module.modules()):
        return (
            f"TrackcheckCallback cannot run with sync_batchnorm=True on {world} processes: "
            "the checks' copies would wait on the other processes at every BatchNorm; "
            f"{RUN_ON_ONE_DEVICE}"
        )
    return None


def _common_plain(value: Any) -> Any:
    """Config values from Hydra (lightning-hydra-template's callbacks config) as plain Python."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover
        return value
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _log_to(trainer: Any, report: Report) -> None:
    """The verdict and each check's status and metrics into each of the Trainer's loggers,
    under ``sanity/``: one ``log_metrics`` at step 0 and the verdict as hyperparameters."""
    import math

    from trackcheck.core import Status

    metrics: dict[str, float] = {f"{PREFIX}passed": float(report.passed)}
    for c in report.checks:
        metrics[f"{PREFIX}{c.name}/ok"] = float(c.status in (Status.PASS, Status.SKIP))
        for k, v in c.metrics.items():
            if isinstance(v, int | float) and math.isfinite(v):
                metrics[f"{PREFIX}{c.name}/{k}"] = float(v)
    verdict = {
        f"{PREFIX}verdict": "passed" if report.passed else "failed",
        f"{PREFIX}gated_on": ",".join(report.gated_on) or "-",
        f"{PREFIX}report": f"{report.output_dir}/report.json",
    }
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=0)
        logger.log_hyperparams(verdict)
        logger.save()
