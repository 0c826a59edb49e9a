"""The Hydra edge builds the pipeline: fresh nested modules per check, loss, step, keys."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_module
from torch import nn

from trackcheck.cli import build_data, build_model_factories, build_pipeline, register_configs


def composed(*overrides: str):
    register_configs()
    with initialize_config_module("trackcheck.conf", version_base="1.3"):
        return compose("config", overrides=["+model=mlp", "tracker=none", *overrides])


class Wrapper(nn.Module):
    """A user's model whose submodule comes from a nested _target_ node."""

    def __init__(self, body: nn.Module, n_out: int) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(8, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_every_call_of_the_factory_builds_nested_target_modules_afresh():
    cfg = composed(
        "~model",
        "+data=breast_cancer",
        "+model._target_=tests.test_hydra_pipeline.Wrapper",
        "+model.n_out=1",
        "+model.body._target_=torch.nn.Linear",
        "+model.body.in_features=30",
        "+model.body.out_features=8",
    )
    factory, _ = build_model_factories(cfg, build_data(cfg))
    a, b = factory(), factory()
    assert a.body is not b.body  # a shared child would carry training from check to check


def test_no_loss_node_means_the_tasks_loss():
    assert build_pipeline(composed()).loss is None


def test_a_shipped_loss_config_with_its_options_becomes_the_pipelines_loss():
    pipe = build_pipeline(composed("loss=cross_entropy", "loss.label_smoothing=0.1"))
    assert isinstance(pipe.loss, nn.CrossEntropyLoss)
    assert pipe.loss.label_smoothing == 0.1


def test_loss_model_selects_the_models_own_loss():
    assert build_pipeline(composed("loss=model")).model_loss


def test_a_step_function_and_pipeline_keys_come_through():
    pipe = build_pipeline(
        composed(
            "step._target_=tests.test_hydra_pipeline.my_step",
            "pipeline.target_key=label",
            "pipeline.output_key=scores",
        )
    )
    assert pipe.step is not None and pipe.step(None, None, None) == 1.5
    assert (pipe.target_key, pipe.output_key) == ("label", "scores")


def my_step(model, batch, optimizer) -> float:
    return 1.5
