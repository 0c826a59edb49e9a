"""Per-token classification (task token): [B, T, C] logits against [B, T] tags with -100,
and how a tagger configured as task lm is told apart from a language model."""

import math

import torch
from conftest import run_check
from torch import nn
from torch.utils.data import TensorDataset

from trackcheck import DataSpec, make_task
from trackcheck.context import Context
from trackcheck.core import Status
from trackcheck.pipeline import Pipeline
from trackcheck.tasks import TokenClassification

TAGS, VOCAB, T = 4, 20, 12


def tagged(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [n, T] and their tags [n, T] (id % 4), the last 3 positions padding (-100)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, T), generator=g)
    tags = ids % TAGS
    ids[:, -3:], tags[:, -3:] = 0, -100
    return ids, tags


def tagger_data(task: str = "token") -> DataSpec:
    ids, tags = tagged()
    ds = TensorDataset(ids, tags)
    return DataSpec(ds, ds, make_task(task, TAGS), kind="tokens", batch_size=16)


class Items(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Hugging Face style dict items: input_ids, attention_mask, labels."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mask = (self.ids[i] != 0).long()
        segment = torch.zeros_like(self.ids[i])  # token_type_ids, as a BERT tokenizer gives
        return {
            "input_ids": self.ids[i],
            "attention_mask": mask,
            "token_type_ids": segment,
            "labels": self.labels[i],
        }


class Tagger(nn.Module):
    """Embedding, a bidirectional GRU, a tag per position: [B, T] -> [B, T, TAGS]."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.rnn = nn.GRU(16, 16, batch_first=True, bidirectional=True)
        self.head = nn.Linear(32, TAGS)

    def forward(self, input_ids: torch.Tensor, **_: object) -> torch.Tensor:
        return self.head(self.rnn(self.emb(input_ids))[0])


def context(data: DataSpec, pipeline: Pipeline | None = None) -> Context:
    return Context(Tagger, data, lambda p: torch.optim.Adam(p), pipeline=pipeline or Pipeline())


def test_token_is_a_task_of_its_own():
    task = make_task("token", TAGS)
    assert isinstance(task, TokenClassification)
    assert task.per_position and not task.autoregressive
    assert make_task("lm", TAGS).autoregressive


def test_loss_prior_and_metric_skip_the_ignored_positions():
    task = make_task("token", TAGS)
    ids, tags = tagged(8)
    zero = torch.zeros(8, T, TAGS)
    assert torch.allclose(task.per_example_loss(zero, tags), torch.full((8,), math.log(TAGS)))
    prior = task.prior(tags)
    assert prior.probs is not None
    counts = torch.bincount(tags[tags >= 0], minlength=TAGS).double()
    assert torch.allclose(prior.probs, counts / counts.sum())
    assert math.isclose(task.constant_loss(prior, torch.full((TAGS,), 1 / TAGS)), math.log(TAGS))
    perfect = torch.nn.functional.one_hot(tags.clamp_min(0), TAGS).float()
    assert bool((task.per_example_metric(perfect, tags) == 1).all())


def test_a_tagger_configured_as_lm_is_read_as_token_classification():
    ctx = context(tagger_data("lm"))
    assert ctx.task.name == "token"
    assert "token classification" in ctx.task_note


def test_a_language_model_stays_lm(text_data):
    ctx = context(text_data)
    assert ctx.task.name == "lm" and ctx.task_note == ""


def test_dict_tags_are_not_shifted_once_read_as_token_classification():
    ids, tags = tagged()
    data = DataSpec(Items(ids, tags), Items(ids, tags), make_task("lm", TAGS), kind="tokens")
    ctx = context(data)  # pipeline.shift_labels unset: a language model's labels would shift
    assert ctx.task.name == "token"
    assert torch.equal(ctx.head("train", 4).y, tags[:4])


def test_segment_ids_matching_a_majority_tag_do_not_make_it_a_language_model():
    ids, _ = tagged()
    tags = (ids % 4 == 0).long()  # tag 0 on about 3 positions in 4, as all-zero segment ids
    data = DataSpec(Items(ids, tags), Items(ids, tags), make_task("lm", 2), kind="tokens")
    assert context(data).task.name == "token"


def test_hugging_face_lm_labels_stay_lm():
    ids, _ = tagged()
    data = DataSpec(Items(ids, ids), Items(ids, ids), make_task("lm", VOCAB), kind="tokens")
    assert context(data).task.name == "lm"  # labels = input_ids: a causal LM, shifted


def test_a_tagger_passes_the_init_checks_and_is_not_charted_for_causality():
    data = tagger_data()
    for check in ("contract", "loss_at_init"):
        r = run_check(check, Tagger, data)
        assert r.status in (Status.PASS, Status.WARN), (check, r.message)
    r = run_check("causality", Tagger, data)
    assert r.status == Status.SKIP
    assert "per-token classification" in r.message
