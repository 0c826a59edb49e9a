"""contract: each planted bug in the targets, output, loss, parameters, batches or step fails
with a message naming the problem and its fix; a clean twin of each passes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import blobs, run_check
from helpers.models import SoftmaxBeforeCE
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset, default_collate

from trackcheck import run
from trackcheck.core import CheckResult, Status
from trackcheck.data import DataSpec, from_datasets
from trackcheck.models import GPT, MLP, ResNet


def contract(model: Callable[[], nn.Module], data: DataSpec, **kwargs: Any) -> CheckResult:
    return run_check("contract", model, data, **kwargs)


def relabel(data: DataSpec, fn: Callable[[Tensor], Tensor], **task: Any) -> DataSpec:
    """The same inputs with targets ``fn(y)`` (the planted label bug), optionally another task."""
    train, test = data.train, data.test
    new = dataclasses.replace(
        data,
        train=TensorDataset(train.tensors[0], fn(train.tensors[1])),  # type: ignore[attr-defined]
        test=TensorDataset(test.tensors[0], fn(test.tensors[1])),  # type: ignore[attr-defined]
    )
    if task:
        from trackcheck.tasks import make_task

        new.task = make_task(task["name"], task.get("num_outputs", 1))
    return new


class Items(Dataset[Any]):
    """A list of items (dicts, for Hugging Face style batches) as a Dataset."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


class CopyTargets(Dataset[Any]):
    """Planted bug: an LM dataset whose targets are its inputs (no shift)."""

    def __init__(self, ds: Dataset[Any]) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        x, _ = self.ds[i]
        return x, x


class Ends(nn.Module):
    """An MLP whose output goes through ``fn`` (softmax, log_softmax, sigmoid, a reshape)."""

    def __init__(self, d: int, c: int, fn: Callable[[Tensor], Tensor], dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, c))
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.net(x))


def mlp4() -> nn.Module:
    return MLP([8], 4, width=32)


# --- clean models pass ------------------------------------------------------------------------
def test_resnet_on_digits_passes_in_one_forward_pass(digits_data):
    r = contract(lambda: ResNet([1, 8, 8], 10), digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["max_class_id"] == 9 and r.metrics["num_outputs"] == 10
    assert r.metrics["loss_batch_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert r.n_forward <= 2 and r.n_backward == 0, (r.n_forward, r.n_backward)


def test_mlp_on_breast_cancer_passes(cancer_data):
    r = contract(lambda: MLP([30], 1), cancer_data)
    assert r.status == Status.PASS, r.message


def test_mlp_on_diabetes_passes(diabetes_data):
    r = contract(lambda: MLP([10], 1), diabetes_data)
    assert r.status == Status.PASS, r.message


def test_gpt_on_text_passes_with_shifted_targets(text_data):
    r = contract(lambda: GPT(96, 32, d_model=32, n_layer=1), text_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["lm_target_is_next"] == 1.0


# --- Hugging Face models with dict batches ----------------------------------------------------
@pytest.fixture(scope="module")
def hf() -> Any:
    return pytest.importorskip("transformers")


def lm_dicts(n: int, seed: int, t: int = 16, vocab: int = 50) -> Items:
    """Causal-LM items with right padding: labels are the inputs, -100 where padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, t), generator=g)
    lengths = torch.randint(t // 2, t + 1, (n,), generator=g)
    mask = (torch.arange(t) < lengths[:, None]).long()
    ids = ids * mask
    labels = ids.masked_fill(mask == 0, -100)
    return Items(
        [{"input_ids": ids[i], "attention_mask": mask[i], "labels": labels[i]} for i in range(n)]
    )


@pytest.mark.parametrize("loss", [None, "model"])
def test_hugging_face_gpt2_with_dict_batches_passes(hf, loss):
    def gpt2() -> nn.Module:
        return hf.GPT2LMHeadModel(
            hf.GPT2Config(
                vocab_size=50,
                n_positions=32,
                n_embd=32,
                n_layer=1,
                n_head=2,
                bos_token_id=0,
                eos_token_id=0,
            )
        )

    data = from_datasets(
        lm_dicts(96, 0), lm_dicts(32, 1), task="lm", num_outputs=50, kind="tokens", batch_size=16
    )
    r = contract(gpt2, data, loss=loss)
    assert r.status == Status.PASS, r.message
    assert "lm_target_is_next" not in r.metrics  # dict batches: the pipeline shifts


def test_hugging_face_bert_classifier_passes(hf):
    def bert() -> nn.Module:
        return hf.BertForSequenceClassification(
            hf.BertConfig(
                vocab_size=60,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=32,
                num_labels=3,
            )
        )

    def items(n: int, seed: int) -> Items:
        g = torch.Generator().manual_seed(seed)
        ids, y = torch.randint(1, 60, (n, 12), generator=g), torch.randint(0, 3, (n,), generator=g)
        mask = torch.ones(n, 12, dtype=torch.long)
        mask[::3, 6:] = 0
        return Items(
            [{"input_ids": ids[i], "attention_mask": mask[i], "labels": y[i]} for i in range(n)]
        )

    data = from_datasets(
        items(96, 0), items(32, 1), task="multiclass", num_outputs=3, kind="tokens", batch_size=16
    )
    r = contract(bert, data, loss="model")
    assert r.status == Status.PASS, r.message


# --- targets against the task and the output --------------------------------------------------
def test_fails_labels_off_by_one():
    r = contract(mlp4, relabel(blobs(), lambda y: y + 1))
    assert r.status == Status.FAIL
    assert (r.metrics["min_class_id"], r.metrics["max_class_id"]) == (1, 4)
    assert "off by one" in r.message and "subtract 1" in r.message


def test_fails_class_id_beyond_num_outputs():
    data = relabel(blobs(), lambda y: y, name="multiclass", num_outputs=3)
    r = contract(lambda: MLP([8], 3), data)
    assert r.status == Status.FAIL
    assert "data.num_outputs=4" in r.message  # the fix: one more class


def test_fails_negative_class_ids_but_ignore_index_passes():
    def unlabelled(marker: int) -> Callable[[Tensor], Tensor]:
        return lambda y: torch.where(torch.arange(len(y)) % 5 == 0, marker, y)

    bad = contract(mlp4, relabel(blobs(), unlabelled(-1)))
    assert bad.status == Status.FAIL and "pipeline.ignore_index" in bad.message
    ok = contract(mlp4, relabel(blobs(), unlabelled(-100)))
    assert ok.status == Status.PASS, ok.message


def test_fails_fractional_float_labels():
    r = contract(mlp4, relabel(blobs(), lambda y: y.float() + 0.7))
    assert r.status == Status.FAIL
    assert "truncates" in r.message and "torch.long" in r.message


def test_integral_float_labels_warn():
    r = contract(mlp4, relabel(blobs(), lambda y: y.float()))
    assert r.status == Status.WARN, r.message


def test_fails_binary_labels_minus_one_and_one():
    r = contract(lambda: MLP([8], 1), relabel(blobs("binary"), lambda y: 2 * y - 1))
    assert r.status == Status.FAIL
    assert "Map -1 to 0" in r.message


def test_fails_output_width_different_from_num_classes():
    r = contract(lambda: MLP([8], 5), blobs())
    assert r.status == Status.FAIL
    assert "out_features 4" in r.message and r.metrics["output_dim"] == 5


@pytest.mark.parametrize("column", ["output", "targets"])
def test_fails_regression_output_that_broadcasts_against_targets(column):
    # output [B, 1] into the user's MSELoss with targets [B], or output [B] into the task's
    # loss with targets [B, 1]: both broadcast to [B, B]
    if column == "output":
        r = contract(lambda: nn.Linear(8, 1), blobs("regression"), loss=nn.MSELoss())
    else:
        data = relabel(blobs("regression"), lambda y: y[:, None], name="regression")
        r = contract(lambda: MLP([8], 1), data)
    assert r.status == Status.FAIL
    assert "broadcast" in r.message and "[64, 64]" in r.message


def test_regression_shapes_that_match_pass():
    data = blobs("regression")
    flat = contract(lambda: MLP([8], 1), data, loss=nn.MSELoss())  # [B] against [B]
    assert flat.status == Status.PASS, flat.message
    column = contract(lambda: nn.Linear(8, 1), data)  # the task's loss squeezes [B, 1]
    assert column.status == Status.PASS, column.message


# --- language-model targets -------------------------------------------------------------------
def test_fails_lm_targets_equal_to_inputs(text_data):
    data = dataclasses.replace(text_data, train=CopyTargets(text_data.train))
    r = contract(lambda: GPT(96, 32, d_model=32, n_layer=1), data)
    assert r.status == Status.FAIL
    assert "copy" in r.message and r.metrics["lm_target_is_input"] == 1.0


# --- parameters and the optimizer -------------------------------------------------------------
def test_fails_fully_frozen_model():
    r = contract(lambda: mlp4().requires_grad_(False), blobs())
    assert r.status == Status.FAIL
    assert "requires grad" in r.message and "requires_grad_(True)" in r.message


def test_frozen_backbone_passes_with_a_note():
    def frozen_body() -> nn.Module:
        model = mlp4()
        model.body.requires_grad_(False)
        return model

    r = contract(frozen_body, blobs())
    assert r.status == Status.PASS, r.message
    assert "frozen" in r.message and r.metrics["frozen_params"] > 0


def body_only(params: Any) -> torch.optim.Optimizer:
    """Planted bug: an optimizer over all parameters but the last two (the head's)."""
    ps = list(params)
    return torch.optim.Adam(ps[:-2] if len(ps) > 2 else ps, lr=1e-3)


def test_fails_parameters_missing_from_the_optimizer():
    r = contract(mlp4, blobs(), optimizer=body_only)
    assert r.status == Status.FAIL
    assert r.metrics["params_not_in_optimizer"] == 2
    assert "head.weight" in r.message and "head.bias" in r.message


class ListOfLayers(nn.Module):
    """Planted bug: a layer held in a Python list is no registered parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.extra = [nn.Linear(8, 8)]
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.extra[0](x))


def test_fails_layers_held_in_a_python_list():
    r = contract(ListOfLayers, blobs())
    assert r.status == Status.FAIL
    assert "nn.ModuleList" in r.message and r.metrics["unregistered_tensors"] == 2


# --- the loss ---------------------------------------------------------------------------------
def test_warns_on_a_loss_summed_over_the_batch():
    # a sum ties the lr to the batch size: a choice (pytorch/examples' VAE sums on purpose),
    # so a warning that says so; whether the lr suits it is the training checks' question
    r = contract(mlp4, blobs(), loss=nn.CrossEntropyLoss(reduction="sum"))
    assert r.status == Status.WARN, r.message
    assert "a summed loss" in r.message and "reduction='mean'" in r.message
    assert r.metrics["loss_batch_ratio"] == pytest.approx(64, rel=1e-4)  # B = 64 examples
    assert r.metrics["loss_scaling_exponent"] == pytest.approx(1.0, abs=1e-4)


def test_fails_unreduced_loss():
    r = contract(mlp4, blobs(), loss=nn.CrossEntropyLoss(reduction="none"))
    assert r.status == Status.FAIL
    assert "not a scalar" in r.message


def focal(out: Tensor, y: Tensor) -> Tensor:
    ce = F.cross_entropy(out, y, reduction="none")
    return ((1 - torch.exp(-ce)) ** 2 * ce).mean()


@pytest.mark.parametrize(
    "loss",
    [
        nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 0.2, 2.0])),
        nn.CrossEntropyLoss(label_smoothing=0.1),
        nn.CrossEntropyLoss(weight=torch.tensor([3.0, 1.0, 1.0, 0.1]), label_smoothing=0.2),
        focal,
    ],
    ids=["class_weights", "label_smoothing", "weights_and_smoothing", "focal"],
)
def test_mean_reduced_losses_pass(loss):
    r = contract(mlp4, blobs(), loss=loss)
    assert r.status == Status.PASS, r.message


def test_loss_that_depends_on_the_batch_size_sublinearly_only_warns():
    # + ln(B): what an in-batch-negatives loss does at init; not a sum, so no fail
    def with_log_batch(out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out, y) + torch.log(torch.tensor(float(len(y))))

    r = contract(mlp4, blobs(), loss=with_log_batch)
    assert r.status == Status.WARN, r.message
    assert 0 < r.metrics["loss_scaling_exponent"] < 0.5


# --- the kind of output the loss is fed -------------------------------------------------------
def test_fails_softmax_before_cross_entropy():
    r = contract(lambda: SoftmaxBeforeCE([8], 4), blobs())
    assert r.status == Status.FAIL
    assert "probabilities" in r.message and "softmax" in r.message


def test_log_softmax_into_cross_entropy_passes_with_a_note():
    r = contract(lambda: Ends(8, 4, lambda z: z.log_softmax(-1)), blobs())
    assert r.status == Status.PASS, r.message
    assert "log-probabilities" in r.message


def test_nll_loss_passes_on_log_probabilities_and_fails_on_logits():
    ok = contract(lambda: Ends(8, 4, lambda z: z.log_softmax(-1)), blobs(), loss=nn.NLLLoss())
    assert ok.status == Status.PASS, ok.message
    bad = contract(mlp4, blobs(), loss=nn.NLLLoss())
    assert bad.status == Status.FAIL and "log_softmax" in bad.message


def test_fails_sigmoid_before_bce_with_logits():
    r = contract(lambda: Ends(8, 1, lambda z: torch.sigmoid(z).squeeze(-1)), blobs("binary"))
    assert r.status == Status.FAIL
    assert "sigmoid" in r.message and r.metrics["output_is_probabilities"] == 1


# --- batch content ----------------------------------------------------------------------------
def test_fails_collate_that_repeats_one_item():
    def first_item(items: list[Any]) -> Any:  # planted bug: every row is the first item
        return default_collate([items[0]] * len(items))

    data = dataclasses.replace(blobs(), collate_fn=first_item)
    r = contract(mlp4, data)
    assert r.status == Status.FAIL
    assert "repeats one item" in r.message and r.metrics["max_repeats"] == 32


def test_collate_that_merges_items_on_purpose_only_warns():
    def merge_pairs(items: list[Any]) -> Any:  # 32 items -> 16 rows, each the mean of two
        x, y = default_collate(items)
        return (x[0::2] + x[1::2]) / 2, y[0::2]

    r = contract(mlp4, dataclasses.replace(blobs(), collate_fn=merge_pairs))
    assert r.status == Status.WARN, r.message
    assert "packs or splits" in r.message


def with_sampler(sampler: Callable[[Any, Any], Any]) -> DataSpec:
    """blobs() through the user's own train loader, ``sampler(train_set, generator)``."""
    base = blobs()

    def loader(generator: Any = None, batch_size: int = 32) -> DataLoader[Any]:
        return DataLoader(base.train, batch_size, sampler=sampler(base.train, generator))

    return dataclasses.replace(base, train_loader_fn=loader)


def test_fails_sampler_that_yields_one_index():
    r = contract(mlp4, with_sampler(lambda ds, _g: [0] * len(ds)))
    assert r.status == Status.FAIL
    assert "sampler that yields one index" in r.message


def test_fails_collate_that_drops_an_item():
    data = dataclasses.replace(blobs(), collate_fn=lambda items: default_collate(items[:-1]))
    r = contract(mlp4, data)
    assert r.status == Status.FAIL
    assert "drops" in r.message and r.metrics["train_batch_size"] == 31


def test_sampler_with_replacement_passes():
    r = contract(mlp4, with_sampler(lambda ds, g: RandomSampler(ds, True, generator=g)))
    assert r.status == Status.PASS, r.message


# --- the user's training step -----------------------------------------------------------------
def make_step(zero_grad: bool = True, eval_mode: bool = False, returns: bool = True) -> Any:
    def step(model: nn.Module, batch: Any, opt: torch.optim.Optimizer) -> Any:
        model.eval() if eval_mode else model.train()
        x, y = batch
        if zero_grad:
            opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss if returns else None

    return step


def dropout_mlp() -> nn.Module:
    return Ends(8, 4, lambda z: z, dropout=0.2)


def test_correct_training_step_passes_with_dropout():
    r = contract(dropout_mlp, blobs(), step=make_step())
    assert r.status == Status.PASS, r.message
    assert "training step" in r.message
    assert r.metrics["step_grad_error"] <= 1e-6  # the same RNG state: the same masks


def test_fails_step_without_zero_grad():
    r = contract(dropout_mlp, blobs(), step=make_step(zero_grad=False))
    assert r.status == Status.FAIL
    assert "zero_grad()" in r.message
    assert r.metrics["step_grad_accumulation_error"] <= 1e-6


def test_fails_step_that_trains_in_eval_mode():
    r = contract(dropout_mlp, blobs(), step=make_step(eval_mode=True))
    assert r.status == Status.FAIL
    assert "eval mode" in r.message and "model.train()" in r.message


def test_step_in_eval_mode_only_warns_on_a_model_without_dropout_or_batchnorm():
    r = contract(mlp4, blobs(), step=make_step(eval_mode=True))
    assert r.status == Status.WARN, r.message
    assert "no difference yet" in r.message


def test_deliberate_gradient_accumulation_only_warns():
    calls = [0]

    def accumulate_two(model: nn.Module, batch: Any, opt: torch.optim.Optimizer) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(model(x), y) / 2
        loss.backward()
        calls[0] += 1
        if calls[0] % 2 == 0:  # step and clear every second call
            opt.step()
            opt.zero_grad()
        return loss

    r = contract(mlp4, blobs(), step=accumulate_two)
    assert r.status == Status.WARN, r.message


def test_fails_step_that_returns_nothing():
    r = contract(mlp4, blobs(), step=make_step(returns=False))
    assert r.status == Status.FAIL
    assert "returned None" in r.message


# --- one message, every problem ---------------------------------------------------------------
def test_lists_every_problem_with_its_fix():
    r = contract(mlp4, relabel(blobs(), lambda y: y + 1), optimizer=body_only)
    assert r.status == Status.FAIL
    assert "(1)" in r.message and "(2)" in r.message
    assert "subtract 1" in r.message and "param group" in r.message


def test_later_checks_skip_with_a_pointer_when_the_contract_fails():
    report = run(
        mlp4,
        relabel(blobs(), lambda y: y + 1),
        checks=["contract", "overfit_batch"],
        progress=False,
    )
    assert report["contract"].status == Status.FAIL
    assert report["overfit_batch"].status == Status.SKIP
    assert "contract" in report["overfit_batch"].message


# --- correct programs: what the loss receives, choices, batch layouts -------------------------
def test_a_column_output_passes_when_the_users_loss_squeezes_it():
    # [B, 1] output against [B] targets is fine when the loss squeezes first: judged on the
    # shapes the loss pairs, not the raw output (the broadcasting twin above still fails)
    from helpers.public_programs import Regressor1, regression_data, squeezed_mse

    r = contract(lambda: Regressor1(8), regression_data(), loss=squeezed_mse)
    assert r.status == Status.PASS, r.message
    assert "your loss pairs each output with its own target" in r.message


def test_a_summed_loss_with_a_clipping_step_is_noted_not_failed(text_data):
    # the char-RNN tutorial's loss: NLL summed over positions and sequences, gradient norm
    # clipped at 1 in the step: the update does not grow with the batch, a choice
    from helpers.public_programs import CharRNN, clipped_step, summed_nll

    r = contract(lambda: CharRNN(96), text_data, loss=summed_nll, step=clipped_step)
    assert r.status == Status.PASS, r.message
    assert "a summed loss, and the training step scales the gradient down" in r.message
    assert r.metrics["step_grad_scale"] < 0.1
    assert r.metrics["loss_scaling_exponent"] == pytest.approx(1.0, abs=1e-3)


def test_the_same_summed_loss_without_clipping_warns(text_data):
    from helpers.public_programs import CharRNN, summed_nll

    r = contract(lambda: CharRNN(96), text_data, loss=summed_nll)
    assert r.status == Status.WARN, r.message
    assert "grows with the batch" in r.message and "learning rate is tied to it" in r.message


def test_a_flat_tokens_plus_offsets_batch_gets_one_line_not_an_index_error():
    from helpers.public_programs import TextClassifier, offsets_text_data

    r = contract(lambda: TextClassifier(50, 16, 4), offsets_text_data())
    assert r.status == Status.FAIL, r.message
    assert "no row per example" in r.message and "nn.EmbeddingBag" in r.message
    assert "padding_idx" in r.message and r.message.count("(1)") == 1


# --- a loss of unknown kind that levels off: a softmax inside the user's own loss -------------
def softmax_then_cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(out.softmax(-1), y)  # planted bug: the loss normalises twice


@pytest.mark.parametrize("classes", [2, 4])
def test_fails_a_loss_that_applies_softmax_before_its_cross_entropy(classes: int):
    r = contract(lambda: MLP([8], classes), blobs(c=classes), loss=softmax_then_cross_entropy)
    assert r.status == Status.FAIL
    assert "levels off" in r.message and "softmax" in r.message


def test_fails_a_binary_loss_that_applies_sigmoid_before_bce_with_logits():
    def sigmoid_then_bce(out: Tensor, y: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(out.sigmoid().reshape(y.shape), y)

    r = contract(lambda: MLP([8], 1), blobs("binary"), loss=sigmoid_then_bce)
    assert r.status == Status.FAIL and "levels off" in r.message


# bound __call__s: losses trackcheck does not recognise by type, so their kind is probed
@pytest.mark.parametrize(
    "loss",
    [nn.CrossEntropyLoss(label_smoothing=0.1).__call__, focal, nn.CrossEntropyLoss().__call__],
    ids=["label_smoothing", "focal", "cross_entropy"],
)
def test_user_losses_that_reach_their_floor_at_confident_logits_pass(loss: Any):
    r = contract(lambda: MLP([8], 4), blobs(), loss=loss)
    assert r.status == Status.PASS, r.message
