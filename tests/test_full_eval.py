import math

import pytest
import torch
from conftest import blobs, run_check
from torch.utils.data import DataLoader

from trackcheck import DataSpec
from trackcheck.checks._shared._eval import estimate
from trackcheck.core import Status
from trackcheck.models import MLP


def _with_loader(data: DataSpec, loader_fn) -> DataSpec:  # type: ignore[no-untyped-def]
    return DataSpec(
        train=data.train,
        test=data.test,
        task=data.task,
        kind=data.kind,
        batch_size=data.batch_size,
        test_loader_fn=loader_fn,
    )


def _digits_model():  # type: ignore[no-untyped-def]
    return MLP([1, 8, 8], 10, width=8)


def test_wilson_interval_and_binomial_se():
    est = estimate(torch.tensor([1.0] * 90 + [0.0] * 10))
    assert est.method == "wilson" and est.n == 100
    assert est.se == pytest.approx(math.sqrt(0.9 * 0.1 / 100))
    # Wilson score interval, written out: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1+z^2/n)
    z, n, p = 1.959964, 100, 0.9
    centre, half = p + z**2 / (2 * n), z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert est.lo == pytest.approx((centre - half) / (1 + z**2 / n), abs=1e-5)
    assert est.hi == pytest.approx((centre + half) / (1 + z**2 / n), abs=1e-5)


def test_continuous_metric_uses_the_sample_se():
    errors = torch.tensor([1.0, 2.0, 4.0, 8.0, 3.0, 5.0])
    est = estimate(errors)
    assert est.method == "t"
    assert est.se == pytest.approx(float(errors.std()) / math.sqrt(6))


def test_large_enough_test_set_passes():
    # 3000 test examples: worst-case half-width 0.98/sqrt(3000) = 0.018 < 0.02 asked
    r = run_check(
        "full_eval", lambda: MLP([8], 4, width=8), blobs(n=12000), {"max_half_width": 0.02}
    )
    assert r.status == Status.PASS, r.message
    assert r.metrics["n_evaluated"] == r.metrics["n_test_set"] == 3000
    assert r.metrics["half_width_judged"] == pytest.approx(0.98 / math.sqrt(3000), rel=1e-3)


def test_digits_passes_by_default_and_says_what_it_resolves(digits_data):
    # nothing asked: 360 examples know the accuracy's first decimal (+-0.052 <= 0.1)
    r = run_check("full_eval", _digits_model, digits_data)
    assert r.status == Status.PASS, r.message
    assert r.metrics["n_evaluated"] == 360 and r.metrics["n_repeated"] == 0
    assert "resolve accuracy to +-0.052 (95%; SE 0.026)" in r.message
    assert r.metrics["se_judged"] == pytest.approx(math.sqrt(0.25 / 360))
    assert {"accuracy", "accuracy_se", "accuracy_ci_lo", "accuracy_ci_hi"} <= set(r.metrics)
    assert {"resolution", "per_class"} <= set(r.figures)


def test_digits_warns_when_asked_for_more_than_it_resolves(digits_data):
    r = run_check("full_eval", _digits_model, digits_data, {"max_half_width": 0.02})
    assert r.status == Status.WARN, r.message
    assert "+-0.052" in r.message and "2401 examples" in r.message  # (0.98 / 0.02)^2
    assert "checks.full_eval.max_half_width" in r.message


def test_a_clearly_too_small_test_set_warns_unasked():
    # 512 -> 128 test examples would pass; 240 -> 60: 1.96 x 0.5 / sqrt(60) = 0.127 > 0.1
    r = run_check("full_eval", lambda: MLP([8], 4, width=8), blobs(n=240))
    assert r.status == Status.WARN, r.message
    assert r.metrics["half_width_judged"] == pytest.approx(0.98 / math.sqrt(60), rel=1e-3)
    assert "not even the first significant digit" in r.message
    assert "about 97 examples" in r.message  # ceil(1.96^2 x 0.25 / 0.1^2) = 97


def test_expected_accuracy_narrows_the_judged_interval(digits_data):
    params = {"expected_metric": 0.99, "max_half_width": 0.02}
    r = run_check("full_eval", _digits_model, digits_data, params)
    # 1.96 sqrt(0.99 * 0.01 / 360) = 0.0103: 360 examples resolve a 99%-accurate model
    assert r.status == Status.PASS, r.message
    assert r.metrics["half_width_judged"] == pytest.approx(0.0103, abs=1e-4)


def test_fails_when_the_eval_loader_drops_the_last_batch(digits_data):
    def drop_last(batch_size=64):  # type: ignore[no-untyped-def]
        return DataLoader(digits_data.test, batch_size=batch_size, drop_last=True)

    r = run_check("full_eval", _digits_model, _with_loader(digits_data, drop_last))
    assert r.status == Status.FAIL
    assert r.metrics["n_evaluated"] == 320 and r.metrics["n_skipped"] == 40  # 360 = 5 x 64 + 40
    assert "yielded 320 examples, the test set has 360" in r.message


def test_fails_on_repeated_samples_even_when_the_count_matches(digits_data):
    n = len(digits_data.test)
    order = list(range(n - 10)) + list(range(10))  # the last 10 skipped, the first 10 twice

    def repeats(batch_size=64):  # type: ignore[no-untyped-def]
        return DataLoader(digits_data.test, batch_size=batch_size, sampler=order)

    r = run_check("full_eval", _digits_model, _with_loader(digits_data, repeats))
    assert r.status == Status.FAIL
    assert r.metrics["n_evaluated"] == n
    assert "10 never evaluated, 10 evaluated more than once" in r.message


def test_regression_reports_mae_with_its_relative_width(diabetes_data):
    model = lambda: MLP([10], 1, out_bias=152.0)  # noqa: E731
    r = run_check("full_eval", model, diabetes_data)
    assert r.status == Status.PASS, r.message  # 89 examples: the MAE to about +-15% < 20%
    assert r.metrics["mae_n"] == 89
    rel = 1.987 * r.metrics["mae_se"] / r.metrics["mae"]  # t(0.975, 88) = 1.987
    assert r.metrics["half_width_judged"] == pytest.approx(rel, rel=1e-3)
    assert "histogram" in r.figures
    asked = run_check("full_eval", model, diabetes_data, {"max_rel_half_width": 0.05})
    assert asked.status == Status.WARN, asked.message  # +-5% asked: about 800 examples needed
    assert asked.metrics["n_to_resolve_limit"] == math.ceil(89 * (rel / 0.05) ** 2)


def test_figures_are_drawn_from_plain_data():
    from trackcheck.checks.full_eval import resolution_figure

    fig = resolution_figure(360, True, 0.026, 0.052, 0.1, False, "accuracy")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["+-0.052 (SE 0.026)"]  # the figure says what this test set resolves


def _pad_per_batch(items):  # type: ignore[no-untyped-def]
    """A collate that pads each batch to its longest sequence (DataCollatorWithPadding)."""
    t = max(len(it["input_ids"]) for it in items)
    pad = lambda v, fill: torch.nn.functional.pad(v, (0, t - len(v)), value=fill)  # noqa: E731
    return {
        "input_ids": torch.stack([pad(it["input_ids"], 0) for it in items]),
        "attention_mask": torch.stack([pad(torch.ones_like(it["input_ids"]), 0) for it in items]),
        "labels": torch.stack([it["labels"] for it in items]),
    }


def test_a_collate_that_pads_per_batch_still_matches_every_example():
    from helpers.hf_models import marker_sequences

    class Unpadded(torch.utils.data.Dataset):  # variable-length items, as a tokenizer gives
        def __init__(self, ds) -> None:  # type: ignore[no-untyped-def]
            self.ds = ds

        def __len__(self) -> int:
            return len(self.ds)

        def __getitem__(self, i):  # type: ignore[no-untyped-def]
            it = self.ds[i]
            return {"input_ids": it["input_ids"][it["attention_mask"] == 1], "labels": it["labels"]}

    base = marker_sequences()
    data = DataSpec(
        train=Unpadded(base.train),
        test=Unpadded(base.test),
        task=base.task,
        kind="tokens",
        batch_size=32,
        collate_fn=_pad_per_batch,
        # batches of 4, not the 32 the reference is collated in: padded to other lengths
        test_loader_fn=lambda batch_size: DataLoader(
            Unpadded(base.test), batch_size=4, collate_fn=_pad_per_batch
        ),
    )

    class Bag(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(32, 8), torch.nn.Linear(8, 4)

        def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
            return self.head((self.emb(input_ids) * attention_mask[..., None]).mean(1))

    r = run_check("full_eval", Bag, data)
    assert r.metrics["n_skipped"] == 0 and r.metrics["n_repeated"] == 0, r.message
    assert r.status != Status.FAIL, r.message
