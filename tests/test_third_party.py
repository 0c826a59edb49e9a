"""Real third-party architectures through the whole checklist, as a user brings them.

Hugging Face transformers models (GPT-2, BERT, ViT, ResNet, ConvNeXt, MobileNetV2) built
from configs with random init (nothing downloaded), fed dict batches and returning
``ModelOutput``s with no adapter code; and a user's own torch models (nested
``nn.Sequential``, tuple batches, a dict output). Each clean model ends with no fail and no
error; each family's planted bug is caught by the check named for it; input trackcheck cannot
read ends in one error line that says what to configure.

The sweeps over 5 seeds (about 5 minutes on 2 idle cores) run only when asked for:
``python -m pytest -m slow tests/test_third_party.py`` or ``TRACKCHECK_SWEEP=1``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

import helpers.hf_models as H  # noqa: E402
from conftest import run_check  # noqa: E402

import trackcheck  # noqa: E402
from trackcheck import ConfigError, DataSpec, Report, Status  # noqa: E402
from trackcheck.data import digits  # noqa: E402
from trackcheck.pipeline import Pipeline, PipelineError  # noqa: E402

BAD = (Status.FAIL, Status.ERROR)


@functools.cache
def dataset(name: str) -> DataSpec:
    """Each dataset once per session (the models are rebuilt by every check)."""
    builders: dict[str, Callable[[], DataSpec]] = {
        "lm": H.lm_dicts,
        "markers": H.marker_sequences,
        "pixels": H.digit_pixels,
        "digits": digits,
    }
    return builders[name]()


# architecture -> (model factory, dataset)
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    "gpt2": (H.gpt2, "lm"),
    "bert": (H.bert_classifier, "markers"),
    "vit": (H.vit, "pixels"),
    "resnet": (H.resnet, "pixels"),
    "convnext": (H.convnext, "pixels"),
    "mobilenet_v2": (H.mobilenet, "pixels"),
    "nested_sequential": (H.NestedNet, "digits"),
    "dict_output": (H.DictOut, "digits"),
}
# seed 0 of each in the default run; MobileNetV2 (17 blocks: ~15 s for the checklist on one
# core) and the other seeds in the sweep
FAST = [m for m in MODELS if m != "mobilenet_v2"]
SEEDS = [0, 1, 2, 3, 4]
SWEEP = [(a, s) for a in MODELS for s in SEEDS if not (a in FAST and s == 0)]


@pytest.fixture
def sweep(request: pytest.FixtureRequest) -> None:
    """The multi-seed sweeps run only when asked for (the module docstring): too long for
    the default suite, which does not deselect ``slow``."""
    expr = str(request.config.getoption("markexpr", "") or "")
    if not (("slow" in expr and "not slow" not in expr) or os.environ.get("TRACKCHECK_SWEEP")):
        pytest.skip("multi-seed sweep: run with -m slow (or TRACKCHECK_SWEEP=1)")


def checklist(arch: str, seed: int, **kwargs: Any) -> Report:
    factory, data = MODELS[arch]
    return trackcheck.run(factory, dataset(data), seed=seed, tracker=None, progress=False, **kwargs)


def assert_clean(arch: str, report: Report) -> None:
    """No fail, no error; the messages of any that did, for the reader of the failure."""
    bad = [c for c in report.checks if c.status in BAD]
    assert not bad, f"{arch}:\n" + "\n".join(f"{c.name} {c.status}: {c.message}" for c in bad)


@pytest.mark.parametrize("arch", FAST)
def test_clean_model_passes_the_checklist(arch: str) -> None:
    assert_clean(arch, checklist(arch, seed=0))


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "seed"), SWEEP)
def test_clean_model_passes_the_checklist_on_every_seed(arch: str, seed: int, sweep: None) -> None:
    assert_clean(arch, checklist(arch, seed=seed))


def test_model_computing_its_own_loss_passes_the_checklist() -> None:
    # loss="model": BERT's own cross-entropy from labels=, read from output.loss
    assert_clean("bert", checklist("bert", seed=0, loss="model"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("arch", ["gpt2", "vit", "resnet"])
def test_model_computing_its_own_loss_passes_on_every_seed(
    arch: str, seed: int, sweep: None
) -> None:
    # GPT-2 shifts its labels inside: the pipeline hands it the unshifted ones
    assert_clean(arch, checklist(arch, seed=seed, loss="model"))


# --- the dependency maps on Hugging Face models --------------------------------------------
def test_gpt2_is_causal_at_its_token_embedding() -> None:
    r = run_check("causality", H.gpt2, dataset("lm"))
    assert r.status == Status.PASS, r.message
    assert r.metrics["max_future_leak"] == 0.0
    assert "transformer.wte" in r.message  # the token table, not the position table wpe


def test_gpt2_left_padding_is_not_charted() -> None:
    r = run_check("causality", H.gpt2, H.lm_dicts(pad_every=1, padding_side="left"))
    assert r.status == Status.PASS, r.message
    assert r.metrics["padded_positions"] > 0
    assert r.metrics["seq_len"] + r.metrics["padded_positions"] == 32


def test_bidirectional_encoder_fed_as_a_language_model_fails_causality() -> None:
    # planted bug (GPT-2 family): BERT's masked-LM head as a next-token model sees the future
    r = run_check("causality", H.bert_lm, dataset("lm"))
    assert r.status == Status.FAIL
    assert "causal mask is missing" in r.message


def test_bidirectional_encoder_on_left_padding_is_named_as_a_missing_mask() -> None:
    # the padded columns get no gradient; charted, they would make the leak look partial
    r = run_check("causality", H.bert_lm, H.lm_dicts(pad_every=1, padding_side="left"))
    assert r.status == Status.FAIL
    assert "causal mask is missing" in r.message


@pytest.mark.parametrize("arch", ["bert", "resnet"])
def test_dict_batches_chart_every_example(arch: str) -> None:
    # the inputs are a dict of keyword inputs: examples are counted on the target
    factory, data = MODELS[arch]
    r = run_check("batch_independence", factory, dataset(data))
    assert r.status == Status.PASS, r.message
    assert r.metrics["examples"] == 8


class BatchCentred(torch.nn.Module):
    """Planted bug (vision family): pixel_values centred over the batch before a
    Hugging Face ConvNeXt, so each example's output depends on its batch mates."""

    def __init__(self) -> None:
        super().__init__()
        self.net = H.convnext()

    def forward(self, pixel_values: torch.Tensor) -> Any:
        x = pixel_values - pixel_values.mean(0)  # [B, C, H, W] minus the batch's mean image
        return self.net(pixel_values=x)


@pytest.mark.parametrize("check", ["batch_independence", "vectorized_equivalence"])
def test_batch_statistic_before_a_vision_model_is_caught(check: str) -> None:
    r = run_check(check, BatchCentred, dataset("pixels"))
    assert r.status == Status.FAIL, r.message


# --- BERT: labels that do not follow the inputs --------------------------------------------
def shuffled_labels(data: DataSpec, seed: int = 0) -> DataSpec:
    """Planted bug (BERT family): the training labels permuted against their sequences."""
    train = H.DictItems(**data.train.columns)  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(seed)
    train.columns["labels"] = train.columns["labels"][torch.randperm(len(train), generator=g)]
    return dataclasses.replace(data, train=train)


def test_bert_with_shuffled_labels_fails_input_independent() -> None:
    r = run_check("input_independent", H.bert_classifier, shuffled_labels(dataset("markers")))
    assert r.status == Status.FAIL, r.message


def test_bert_with_true_labels_passes_input_independent() -> None:
    r = run_check("input_independent", H.bert_classifier, dataset("markers"))
    assert r.status == Status.PASS, r.message


# --- input trackcheck cannot read: one line, with what to configure ------------------------
def renamed_target(data: DataSpec, key: str) -> DataSpec:
    """The same items with the labels under ``key``, a name trackcheck does not guess."""

    def renamed(ds: Any) -> H.DictItems:
        cols = dict(ds.columns)
        cols[key] = cols.pop("labels")
        return H.DictItems(**cols)

    return dataclasses.replace(data, train=renamed(data.train), test=renamed(data.test))


def test_dict_batch_without_a_target_key_is_one_config_error_naming_the_key() -> None:
    data = renamed_target(dataset("pixels"), "class_idx")
    with pytest.raises(ConfigError) as e:  # exit 2 from the command line
        trackcheck.run(H.vit, data, tracker=None, progress=False)
    assert "\n" not in str(e.value)
    assert "class_idx" in str(e.value) and "pipeline.target_key" in str(e.value)


def test_target_key_configured_reads_the_batch() -> None:
    data = renamed_target(dataset("pixels"), "class_idx")
    r = run_check("overfit_batch", H.vit, data, pipeline=Pipeline(target_key="class_idx"))
    assert r.status == Status.PASS, r.message


def test_unreadable_output_is_one_config_error_naming_the_output_key() -> None:
    with pytest.raises(ConfigError) as e:
        trackcheck.run(H.Unreadable, dataset("digits"), tracker=None, progress=False)
    assert "\n" not in str(e.value)
    assert "['hidden', 'scores']" in str(e.value) and "pipeline.output_key" in str(e.value)


def test_output_key_configured_reads_the_output() -> None:
    r = run_check(
        "vectorized_equivalence",
        H.Unreadable,
        dataset("digits"),
        pipeline=Pipeline(output_key="scores"),
    )
    assert r.status == Status.PASS, r.message


def test_pipeline_says_what_to_configure_for_an_unreadable_batch() -> None:
    with pytest.raises(PipelineError, match="pipeline.target_key"):
        Pipeline().split({"pixel_values": torch.zeros(2, 1, 4, 4), "class_idx": torch.ones(2)})
