"""The random streams the checks draw from, one named offset each (added to the stage seed).

Each check that shuffles batches, splits a dataset or samples noise takes its offset from
here, so the streams are distinct by construction (no two checks share one by accident) and
each stays fixed when another check changes. The values are the ones the checks' thresholds
were measured with: changing one changes which batches a check sees.
"""

from __future__ import annotations

from typing import Final

SNAPSHOT: Final = 0  # input_snapshot: the first training batch, as training would see it
LOSS_DECREASES: Final = 7  # the shared training run (_run.py) and loss_decreases' bigger model
INPUT_INDEPENDENT: Final = 11  # input_independent: batches both models train on
BLANK_NOISE: Final = 18  # input_independent: the noise that blanks a normalising model's inputs
HOLDOUT_SPLIT: Final = 17  # input_independent: which training examples are held out
PREDICTION_RECALIBRATION: Final = 19  # prediction_dynamics: BatchNorm recalibration batches
AUGMENTATION: Final = 23  # augmentation_off: both seeded training loaders
HUMAN_BASELINE: Final = 31  # human_baseline: the short run's batches
OVERFIT_REFERENCE: Final = 61  # overfit_batch: targets of the constant-predictor reference
INIT_OUTPUTS: Final = 101  # loss_at_init, init_bias: examples the model sees at init
INIT_NOISE: Final = 404  # loss_at_init: the Gaussian logits of the band's top
DETERMINISM: Final = 41  # determinism: its runs (+1 for the run with another seed)
CONTRACT: Final = 311  # contract: its batch probe (and +1 for the step probe)
FINITE: Final = 3  # finite: the training batch it replays with hooks
DATA_READ: Final = 229  # leakage, split_consistency: the subset read of a long split
LEAKAGE: Final = 233  # leakage: nearest-neighbour queries, per-coordinate tie-breaking
BATCH_CONTENT: Final = 137  # batch_content: the loader pass (+1: the sampler's reference pass)
OUTPUT_RANGE: Final = 149  # output_range: the batch its short fit trains on
LR_RANGE: Final = 157  # lr_range: the batches of its learning-rate sweep
