"""The framework: error isolation, fresh models, the gate, selection and the report."""

import json
from dataclasses import dataclass

import pytest
import torch
from conftest import blobs

import trackcheck
from trackcheck import CheckResult, GatePolicy, SkipCheck, Status
from trackcheck.core import ConfigError
from trackcheck.models import MLP
from trackcheck.registry import _REGISTRY, all_checks, register


@dataclass
class NoParams:
    pass


@pytest.fixture
def temp_checks():
    """Register throw-away checks for one test and remove them afterwards."""
    before = dict(all_checks())  # import the built-in checks before taking the snapshot
    yield register
    _REGISTRY.clear()
    _REGISTRY.update(before)


def model():
    return MLP([8], 4)


def test_a_crashing_check_becomes_error_and_the_stage_goes_on(temp_checks, tmp_path):
    @temp_checks("t_crash", NoParams, order=1)
    def crash(ctx, p):
        raise RuntimeError("boom")

    @temp_checks("t_ok", NoParams, order=2)
    def ok(ctx, p):
        return CheckResult("t_ok", Status.PASS, "fine")

    r = trackcheck.run(
        model, blobs(), checks=["t_crash", "t_ok"], progress=False, output_dir=tmp_path
    )
    assert r["t_crash"].status == Status.ERROR
    assert "RuntimeError: boom" in r["t_crash"].message
    assert r["t_ok"].status == Status.PASS
    assert not r.passed and r.gated_on == ["t_crash"]


def test_each_check_gets_a_fresh_identically_seeded_model(temp_checks):
    seen = []

    @temp_checks("t_a", NoParams, order=1)
    def a(ctx, p):
        m = ctx.new_model()
        seen.append(m.head.weight.detach().clone())
        m.head.weight.data.zero_()  # a check that scribbles on its model
        return CheckResult("t_a", Status.PASS, "")

    @temp_checks("t_b", NoParams, order=2)
    def b(ctx, p):
        seen.append(ctx.new_model().head.weight.detach().clone())
        return CheckResult("t_b", Status.PASS, "")

    trackcheck.run(model, blobs(), checks=["t_a", "t_b"], progress=False)
    assert seen[0].abs().sum() > 0
    assert seen[0].equal(seen[1])


def test_warn_gates_only_when_asked(temp_checks):
    @temp_checks("t_warn", NoParams)
    def w(ctx, p):
        return CheckResult("t_warn", Status.WARN, "hmm")

    assert trackcheck.run(model, blobs(), checks=["t_warn"], progress=False).passed
    strict = GatePolicy(fail_on_warn=True)
    assert not trackcheck.run(model, blobs(), checks=["t_warn"], gate=strict, progress=False).passed


def test_skip_never_gates_and_a_non_required_fail_does_not_either(temp_checks):
    @temp_checks("t_skip", NoParams, order=1)
    def s(ctx, p):
        raise SkipCheck("not for this model")

    @temp_checks("t_fail", NoParams, order=2)
    def f(ctx, p):
        return CheckResult("t_fail", Status.FAIL, "bad")

    r = trackcheck.run(
        model,
        blobs(),
        checks=["t_skip", "t_fail"],
        progress=False,
        gate=GatePolicy(required=["t_skip"]),
    )
    assert r["t_skip"].status == Status.SKIP and r["t_skip"].message == "not for this model"
    assert r.passed


def test_report_json_follows_schema_version_1(tmp_path):
    r = trackcheck.run(model, blobs(), checks=["loss_at_init"], progress=False, output_dir=tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["schema_version"] == 1
    assert doc["status"] == r.status == "passed"
    (check,) = doc["checks"]
    assert {"name", "status", "message", "metrics", "duration_s"} <= check.keys()
    assert check["name"] == "loss_at_init" and check["metrics"]["loss"] > 0
    assert doc["environment"]["torch"]
    assert trackcheck.Report.from_json(doc).checks[0].metrics == check["metrics"]


def test_fast_selection_is_a_subset_in_checklist_order():
    from trackcheck.validate import select_checks

    fast = [s.name for s in select_checks("fast")]
    every = [s.name for s in select_checks("all")]
    assert {"loss_at_init", "overfit_batch"} <= set(fast) <= set(every)
    assert fast == [n for n in every if n in fast]


def test_unknown_check_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown check 'overfit_btach'.*available: "):
        trackcheck.run(model, blobs(), checks=["overfit_btach"], progress=False)


def test_params_for_a_check_are_typed_and_checked_before_any_compute():
    with pytest.raises(ConfigError, match="checks.overfit_batch: .*max_stepz"):
        trackcheck.run(
            model,
            blobs(),
            checks=["overfit_batch"],
            progress=False,
            params={"overfit_batch": {"max_stepz": 3}},
        )


def test_a_model_instance_works_as_well_as_a_factory():
    r = trackcheck.run(MLP([8], 4), blobs(), checks=["loss_at_init"], progress=False)
    assert r.passed


def test_factory_returning_a_non_module_is_an_error_with_a_fix():
    r = trackcheck.run(lambda: "not a model", blobs(), checks=["loss_at_init"], progress=False)
    assert r["loss_at_init"].status == Status.ERROR
    assert "not a torch.nn.Module" in r["loss_at_init"].message


def test_an_optimizer_that_cannot_be_built_fails_before_any_check():
    from trackcheck.core import ConfigError

    def bad_optim(params):
        return torch.optim.SGD(params, lr="abc")

    with pytest.raises(ConfigError, match="the optimizer could not be built"):
        trackcheck.run(model, blobs(), optimizer=bad_optim, progress=False)


def test_a_typo_in_gate_required_is_refused_before_any_compute():
    with pytest.raises(
        ConfigError, match=r"gate.required names unknown check\(s\) \['overfit_batchh'\]"
    ):
        trackcheck.run(
            model,
            blobs(),
            checks=["loss_at_init"],
            progress=False,
            gate=trackcheck.GatePolicy(required=["overfit_batchh"]),
        )


def test_an_empty_selection_of_checks_is_refused():
    with pytest.raises(ConfigError, match="selects no check"):
        trackcheck.run(model, blobs(), checks=[], progress=False)


# --- cost accounting: what the benchmark reads -------------------------------------------
def test_init_bias_reuses_the_init_forward_of_loss_at_init_and_judges_the_same():
    both = trackcheck.run(
        model, blobs(), checks=["loss_at_init", "init_bias"], tracker=None, progress=False
    )
    alone = trackcheck.run(model, blobs(), checks=["init_bias"], tracker=None, progress=False)
    assert both["loss_at_init"].n_forward > 0 and both["init_bias"].n_forward == 0
    assert both["init_bias"].metrics == alone["init_bias"].metrics


def test_the_dependency_maps_vjps_count_as_backward_passes_inside_the_model():
    r = trackcheck.run(model, blobs(), checks=["batch_independence"], progress=False)
    c = r["batch_independence"]
    assert c.n_backward >= 1 and 0 < c.model_s <= c.duration_s


def test_the_bigger_model_trains_after_the_first_is_freed():
    import weakref

    built: list[weakref.ref] = []
    alive_when_bigger: list[int] = []

    def small():
        m = MLP([8], 4)
        built.append(weakref.ref(m))
        return m

    def bigger():
        alive_when_bigger.append(sum(r() is not None for r in built))
        return MLP([8], 4, width=128)

    r = trackcheck.run(
        small, blobs(), checks=["loss_decreases"], bigger_model=bigger, progress=False
    )
    assert "bigger model" in r["loss_decreases"].message
    assert alive_when_bigger == [0]  # one model (and its optimizer state) at a time


def test_the_gate_policys_first_name_stays_importable():
    from trackcheck.validate import GatePolicy as Policy

    assert trackcheck.Gate is trackcheck.GatePolicy is Policy
