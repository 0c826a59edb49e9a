"""The built-in checks: one module, or one package when a check has helpers of its own.

:func:`trackcheck.registry.all_checks` imports every module and package here whose name does
not start with ``_``; each registers its check with ``@register``. What two or more checks
share is in :mod:`trackcheck.checks._shared` (its docstring lists it).

The checklist, in the order a stage runs it (:data:`CHECKLIST`, which the registry reads):
cheap checks of the pipeline and the data first, then the model at init, then the checks
that train. The contract is a precondition: when it fails, the rest are skipped with a
pointer to it.

====================== ==== =====================================================
check                  fast what it proves
====================== ==== =====================================================
contract               yes  targets, output, loss, optimizer, batches and step fit
leakage                yes  no test example is a training one; no input gives y away
finite                 yes  inputs, outputs, loss, gradients finite (or where not)
split_consistency      yes  the test split's labels and statistics match the train's
batch_content          yes  batches hold distinct examples (no repeats, no drops)
determinism            yes  same seed, same batches, losses and weights
loss_at_init           yes  the loss at init matches the derived value
augmentation_off       yes  the same sample fetched twice is bit-identical
init_bias              yes  the final layer's bias carries the prior
input_snapshot         yes  what the model's forward receives, decoded and checked
full_eval              yes  every test example evaluated once, metric with interval
human_baseline              the metric beside a human baseline
input_independent           real inputs beat blanked inputs on held-out data
gradient_flow               every layer gets a usable gradient
overfit_batch          yes  a few examples fit to near-zero loss
output_range           yes  the outputs can reach the targets
loss_decreases              training loss goes down over a short run
lr_range               yes  the learning rate lies in a range test's usable range
prediction_dynamics         predictions on a fixed batch move smoothly
batch_independence          example i's output depends on input i only
causality                   the output at position t depends on inputs up to t
vectorized_equivalence      the batched forward equals single-example forwards
====================== ==== =====================================================

How the checks talk to each other, besides their own results (all declared here):

- reading another check's result (``ctx.finished``, the results so far in this stage),
  :data:`READS`: overfit_batch and loss_decreases append gradient_flow's first finding to
  their message when they fail or warn (``gradient_flow.finding_note``); lr_range runs (by
  default) only after overfit_batch or loss_decreases failed or warned (its ``after``
  parameter) or after any check
  that trains recorded a diverging run (input_independent, overfit_batch, output_range,
  loss_decreases judge their runs by ``_shared._trajectory`` and record the verdict in
  their metrics). A reader runs after what it reads.
- sharing one measurement (``ctx.cache`` or a cache keyed by the Context), :data:`SHARES`:
  loss_at_init and init_bias judge the same forward at init (``_shared._common.init_outputs``);
  leakage and split_consistency the same read of both splits (``_shared._data_read``).
- the runner, after every check: a non-finite loss the Context noted is located by
  ``_shared._nonfinite.annotate`` and named in that check's message (the finite check
  locates its own).

A check that is not in :data:`CHECKLIST` (a plugin's, through the ``trackcheck.checks``
entry points) runs after the built-ins, ordered by its ``@register(order=...)`` then name.
"""

from __future__ import annotations

# The order a stage runs the built-in checks in. Every built-in check is listed once
# (tests/test_checklist.py); a check that reads another's result comes after it.
CHECKLIST: tuple[str, ...] = (
    "contract",
    "leakage",
    "finite",
    "split_consistency",
    "batch_content",
    "determinism",
    "loss_at_init",
    "augmentation_off",
    "init_bias",
    "input_snapshot",
    "full_eval",
    "human_baseline",
    "input_independent",
    "gradient_flow",
    "overfit_batch",
    "output_range",
    "loss_decreases",
    "lr_range",
    "prediction_dynamics",
    "batch_independence",
    "causality",
    "vectorized_equivalence",
)

# check -> the checks whose results (ctx.finished) it reads; each of them runs before it
READS: dict[str, tuple[str, ...]] = {
    "overfit_batch": ("gradient_flow",),
    "loss_decreases": ("gradient_flow",),
    "lr_range": ("input_independent", "overfit_batch", "output_range", "loss_decreases"),
}

# a measurement made once per stage -> the checks that share it (whichever runs first pays)
SHARES: dict[str, tuple[str, ...]] = {
    "init_outputs": ("loss_at_init", "init_bias"),
    "read_splits": ("leakage", "split_consistency"),
}
