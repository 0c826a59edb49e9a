"""The statistics of the input_independent check, kept apart from its training and judging:
the one-sided paired t-test of the per-example gain (baseline loss - real loss), the
t-interval of the mean gain, the paired test's power (noncentral t), and the two tests that
decide an undecided set (below another set's gain, Welch; below a minimal effect, noncentral
t). Each takes the per-example gains [N] as a numpy array and returns plain floats.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from trackcheck._lazy import lazy_module

if TYPE_CHECKING:
    from scipy import stats
else:  # scipy is imported when a test is computed, not with the checks
    stats = lazy_module("scipy.stats")


def paired_test(gain: np.ndarray) -> float:
    """One-sided paired t-test p-value for "the mean gain is positive" (gain = baseline loss
    - real loss, per example). The mean, not a rank statistic: under "no information" the
    mean gain is <= 0 but its distribution need not be symmetric, which a signed-rank test
    would assume; with tens of examples or more the mean is close enough to normal."""
    if not np.any(gain != 0):
        return 1.0  # identical losses: the model's outputs do not depend on its input
    if len(gain) < 2 or float(gain.std()) == 0.0:
        return 0.0 if float(gain.mean()) > 0 else 1.0
    return float(stats.ttest_1samp(gain, 0.0, alternative="greater").pvalue)


def mean_ci(gain: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """t-interval of the mean gain: the effect size beside the test's verdict."""
    n = len(gain)
    if n < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(gain.std(ddof=1)) / math.sqrt(n)
    return float(gain.mean()) - half, float(gain.mean()) + half


def _nct_cdf(t: float, df: float, nc: float) -> float:
    """P(T <= t) for a noncentral t; scipy's cdf turns NaN far in the left tail (t << nc),
    where its survival function still gives the (then ~0) answer."""
    c = float(stats.nct.cdf(t, df, nc))
    return c if math.isfinite(c) else float(1.0 - stats.nct.sf(t, df, nc))


def power(n: int, d: float, level: float) -> float:
    """Power of the one-sided paired t-test at ``level`` with ``n`` examples to detect a mean
    gain of ``d`` per-example standard deviations (noncentral t, noncentrality d sqrt(n))."""
    if n < 2:
        return 0.0
    crit = float(stats.t.ppf(1 - level, n - 1))
    return 1.0 - _nct_cdf(crit, n - 1, d * math.sqrt(n))


def below_effect_test(gain: np.ndarray, d: float) -> float:
    """One-sided p-value for "the mean gain is below ``d`` standard deviations" (H0: mean/sd
    >= d), by the noncentral t: small when the data rule out a gain that large."""
    n = len(gain)
    if n < 2:
        return 1.0
    sd = float(gain.std(ddof=1))
    if sd == 0.0:  # every example gains the same: the gain is known exactly
        return 0.0 if float(gain.mean()) <= 0 < d else 1.0
    return _nct_cdf(float(gain.mean()) / sd * math.sqrt(n), n - 1, d * math.sqrt(n))


def below_other_test(gain: np.ndarray, decisive: np.ndarray) -> float:
    """One-sided Welch p-value for "this set's mean gain is below the decisive set's": for a
    correct model both held-out sets come from the training distribution, so their mean
    gains are equal and this p-value is uniform (or larger)."""
    if len(gain) < 2:
        return 1.0
    if not np.any(gain != gain[0]):  # known exactly: is the decisive set's mean above it?
        return float(stats.ttest_1samp(decisive, gain[0], alternative="greater").pvalue)
    return float(stats.ttest_ind(decisive, gain, equal_var=False, alternative="greater").pvalue)
