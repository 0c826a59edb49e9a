"""checks=fast keeps its documented budget (trackcheck/conf/checks/fast.yaml, README): at most
FAST_BUDGET model passes (forward + backward) besides full_eval's one pass over the test set,
measured where it costs most: a model that cannot fit, so overfit_batch runs to its cap."""

import torch
from conftest import blobs

import trackcheck
from trackcheck.models import MLP

# overfit_batch's cap dominates: 300 steps (300 forward + 300 backward), twice when it fails
# (its retry at another lr); the rest of the fast selection took about 170 passes on
# resnet/digits (docs/checks.md quotes it)
FAST_BUDGET = 1400


def test_the_fast_selection_stays_within_its_budget_of_model_passes():
    report = trackcheck.run(
        lambda: MLP([8], 4, width=8),
        blobs(),
        checks="fast",
        # nothing fits, at this lr or at its retry's: every cap is reached
        optimizer=lambda ps: torch.optim.SGD(ps, lr=1e-12),
        progress=False,
    )
    names = [c.name for c in report.checks]
    assert "loss_decreases" not in names and "prediction_dynamics" not in names
    assert report["overfit_batch"].n_backward >= 600  # the worst case was measured
    passes = {c.name: c.n_forward + c.n_backward for c in report.checks if c.name != "full_eval"}
    assert sum(passes.values()) <= FAST_BUDGET, passes
