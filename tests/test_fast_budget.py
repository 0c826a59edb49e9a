"""checks=fast keeps its documented budget (trackcheck/conf/checks/fast.yaml, README): at most
FAST_BUDGET model passes (forward + backward) besides full_eval's one pass over the test set,
measured where it costs most: a model that cannot fit, so overfit_batch runs to its cap."""

import torch
from conftest import blobs

import trackcheck

# overfit_batch's cap dominates: a fit that still moves goes from 300 to 1200 steps, then
# 300 more at another lr; one whose loss rose on some step (dropout) tries a tenth of the lr
# for 300 steps first (1800 forward + 1800 backward in all); output_range's fit doubles up to
# 384 steps while undecided (768 passes); the rest of the fast selection took about 170
# passes on resnet/digits (docs/checks.md quotes it). lr_range runs in checks=fast after a
# failed or diverging training run: its sweep adds at most 2 x 120 passes
FAST_BUDGET = 4600 + 2 * 120


def dropout_mlp() -> torch.nn.Module:
    """An MLP whose dropout makes its loss rise on some steps."""
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(8, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(32, 4),
    )


def test_the_fast_selection_stays_within_its_budget_of_model_passes():
    report = trackcheck.run(
        dropout_mlp,
        blobs(),
        checks="fast",
        # a fit that moves, too slowly to fit at this lr, at a tenth of it or at ten times
        # it: every cap is reached
        optimizer=lambda ps: torch.optim.SGD(ps, lr=3e-4),
        progress=False,
    )
    names = [c.name for c in report.checks]
    assert "loss_decreases" not in names and "prediction_dynamics" not in names
    assert report["overfit_batch"].n_backward >= 1800  # the worst case was measured
    passes = {c.name: c.n_forward + c.n_backward for c in report.checks if c.name != "full_eval"}
    assert sum(passes.values()) <= FAST_BUDGET, passes
