"""The contract check's parameters, apart from the check so that its probes can name the type
without importing the check (which imports them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ContractParams:
    # examples the contract is read on (one forward pass); at least 2, so that the loss of
    # the batch can be compared with the losses of its two halves
    n_examples: int = 64
    # an output row "is" probabilities when it lies in [0, 1] and sums to 1 within this, and
    # log-probabilities when its logsumexp is 0 within this: float32 softmax sums to 1 within
    # ~1e-6 even over a 50k vocabulary (pairwise summation), while logits at init miss it
    # by O(1); 1e-4 leaves a 100x margin on both sides
    prob_atol: float = 1e-4
    # any per-example mean (plain, class-weighted, over non-ignored tokens: a ratio of sums)
    # lies between the losses of the batch's two halves, exactly; this is the float32
    # rounding margin, relative. Measured: a plain mean equals its halves' mean within 5e-8;
    # GPT-2's eval-mode rows are bit-identical between batches of 32 and 64 on CPU. A sum
    # misses the range by the smaller half's loss (about ln C at init): orders above this
    mean_rtol: float = 1e-3
    # loss(batch) / mean(loss(half), loss(other half)) = 2**k: k = 0 for a mean, k = 1 for a
    # sum. Outside the halves' range, k above the midpoint (on the log scale) fails as a
    # loss that scales with the batch size; below it warns (a loss that depends on the
    # batch's composition, e.g. in-batch negatives)
    max_scaling_exponent: float = 0.5
    # LM tuple batches: "the targets are the next tokens" when y[:, t] == x[:, t + 1] on more
    # than this share of positions (1.0 under the convention; unrelated text agrees on about
    # sum_i p_i^2 of them, 0.06 for English characters): the majority is a wide midpoint
    shift_share: float = 0.5
    # a sampler without replacement repeats an example in a batch only as often as the
    # dataset holds copies of it: one example filling more than this share of a batch (and
    # not of the dataset's items) is a collate or sampler that repeats one item
    max_repeat_share: float = 0.5
    # under uniform sampling a batch's share of repeated rows is at most the dataset's in
    # expectation (a batch of B rows sees each copy-pair with probability ~(B/N)^2, the
    # first dataset_items items with ~(m/N)^2 >= that); more than this excess warns
    # (samplers with replacement or class oversampling repeat rows on purpose: not a fail)
    excess_duplicates: float = 0.25
    dataset_items: int = 256  # items read by index for the dataset's own duplicate share
    # the user's step: the .grad it leaves after a second call must equal what the same call
    # leaves on a copy whose .grad was cleared, within this (relative). Same parameters, batch
    # and RNG state: measured 0.0 on CPU (dropout MLP, BatchNorm ResNet); CUDA's atomic adds
    # can differ by float rounding, orders below this. A step without zero_grad is off by
    # |g1| / |g1 + g2|, about 0.5-1
    grad_rtol: float = 1e-3
