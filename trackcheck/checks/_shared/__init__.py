"""What two or more checks share; a helper that serves one check lives in that check's package.

The leading underscore keeps this package out of the registry (no check is defined here).

- ``_streams``: the named random streams (offsets added to the stage seed), one per use, so
  no two checks draw the same batches by accident. A new check that shuffles or samples
  adds its own offset here.
- ``_common``: shuffled training batches, the outputs at init (computed once per stage and
  shared by loss_at_init and init_bias through ``ctx.cache``), target samples, formatting.
- ``_floor``: expected losses through the loss training uses (loss_at_init, output_range,
  overfit_batch).
- ``_fingerprint``: byte-exact fingerprints of samples and batches (determinism,
  augmentation_off, full_eval, the contract's batch checks, batch_content).
- ``_eval``: one pass over the test set and the human metric with its interval (full_eval,
  human_baseline).
- ``_bn``: BatchNorm running statistics recomputed before an eval-mode judgement
  (input_independent, human_baseline, prediction_dynamics).
- ``_park``: one model training on the device at a time, the idle one parked in host memory
  (contract, input_independent).
- ``_deps``: dependency maps by backprop (batch_independence, causality).
- ``_data_read``: both splits read once, example by example, cached per Context (leakage,
  split_consistency).
- ``_trajectory``: one judgement of a short training run (diverged: non-finite, exploded,
  overstepped, spiked, rose; plateaued; decreased) with its documented thresholds
  (input_independent, overfit_batch, output_range, loss_decreases; lr_range reads it).
- ``_run``: one seeded training run of a fresh model read by several checks through
  observers, until each has decided (gradient_flow, prediction_dynamics, loss_decreases'
  base model), cached per Context; its steps are the stage's shared row in the benchmark.
- ``_nonfinite``: where a NaN or Inf starts (the finite check, and the runner after every
  check that saw a non-finite loss).
"""
