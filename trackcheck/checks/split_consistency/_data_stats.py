"""The statistics behind split_consistency: label distributions (G-test, KS, total
variation) and per-channel/feature input moments (standardised mean difference and log
scale ratio, each with a standard error). The check (this package's __init__) judges.

Input moments come as per-EXAMPLE channel means a_i = mean(x) and mean squares b_i =
mean(x^2) over the channel's positions (one value each for a tabular feature). The pooled
mean is mean(a), the pooled variance v = mean(b) - mean(a)^2, and their standard errors are
computed over examples, not pixels: the pixels of one image are not independent draws, the
images are. The delta method gives var(v) ~ (4 m^2 var(a) - 4 m cov(a, b) + var(b)) / n,
which grows with the data's kurtosis, so heavy-tailed features get wide intervals.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

from trackcheck._lazy import lazy_module

if TYPE_CHECKING:
    from scipy import stats
else:  # scipy is imported when a test is computed, not with the checks
    stats = lazy_module("scipy.stats")

IGNORE = -100


@dataclass
class LabelShift:
    """The test split's target distribution against the training split's."""

    kind: str  # "classes" | "tokens" | "values"
    categories: list[str]  # bar labels for the figure (classes, tokens, value bins)
    p_train: np.ndarray  # [K] proportions
    p_test: np.ndarray  # [K]
    effect: float  # total variation distance (classes, tokens) or KS statistic (values)
    p_value: float  # nan where no valid test exists (tokens are not independent draws)
    named: list[str]  # the classes that differ, with their standardised residuals
    unseen: list[str]  # classes (tokens) in the test split never in the training split


def class_shift(y_tr: Tensor, y_te: Tensor, names: list[str] | None, alpha: float) -> LabelShift:
    """G-test of the 2 x K table of class counts (train, test): a two-sample test, since the
    training proportions are estimates too (with 4x the test examples, treating them as
    known inflates the statistic by n_test / n_train = 25%). Classes named by their adjusted
    standardised residuals beyond the Bonferroni normal quantile at ``alpha``."""
    a, b = _class_ids(y_tr), _class_ids(y_te)
    k = int(max(a.max(initial=0), b.max(initial=0))) + 1
    c_tr, c_te = np.bincount(a, minlength=k), np.bincount(b, minlength=k)
    present = np.flatnonzero(c_tr + c_te)
    label = [names[i] if names and i < len(names) else str(i) for i in range(k)]
    p_tr, p_te = c_tr / max(c_tr.sum(), 1), c_te / max(c_te.sum(), 1)
    tvd = 0.5 * float(np.abs(p_tr - p_te).sum())
    unseen = [label[i] for i in present if c_tr[i] == 0]
    table = np.stack([c_tr[present], c_te[present]])  # [2, K']
    if len(present) < 2 or not (c_tr.sum() and c_te.sum()):  # nothing to compare
        return LabelShift("classes", label, p_tr, p_te, tvd, 1.0, [], unseen)
    g, p, _, expected = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
    n, row, col = table.sum(), table.sum(1), table.sum(0)
    resid = (table[1] - expected[1]) / np.sqrt(expected[1] * (1 - row[1] / n) * (1 - col / n))
    z = stats.norm.isf(alpha / (2 * len(present)))
    named = [
        f"{label[i]} ({p_te[i]:.1%} of test vs {p_tr[i]:.1%} of train, z = {r:+.1f})"
        for i, r in sorted(zip(present, resid, strict=True), key=lambda t: -abs(t[1]))
        if abs(r) > z
    ]
    return LabelShift("classes", label, p_tr, p_te, tvd, float(p), named, unseen)


def _class_ids(y: Tensor) -> np.ndarray:
    """[M] the class ids in ``y`` (ignored positions dropped); soft or one-hot targets
    [N, C] (label smoothing, mixup) count as their most likely class."""
    if y.dim() == 2 and y.is_floating_point() and y.shape[1] > 1:
        y = y.argmax(1)
    v = y.reshape(-1).double().numpy()
    v = v[np.isfinite(v) & (v != IGNORE)]
    return np.rint(v).astype(np.int64).clip(0)


def token_shift(y_tr: Tensor, y_te: Tensor, itos: list[str] | None) -> LabelShift:
    """Unigram distributions of the next-token targets; no p-value (the tokens of a text are
    not independent draws, so a count test would call any two texts different)."""
    a, b = _class_ids(y_tr), _class_ids(y_te)
    k = int(max(a.max(initial=0), b.max(initial=0))) + 1
    c_tr, c_te = np.bincount(a, minlength=k), np.bincount(b, minlength=k)
    p_tr, p_te = c_tr / max(c_tr.sum(), 1), c_te / max(c_te.sum(), 1)
    label = [repr(itos[i]) if itos and i < len(itos) else str(i) for i in range(k)]
    unseen = [label[i] for i in np.flatnonzero((c_tr == 0) & (c_te > 0))]
    top = np.argsort(-(p_tr + p_te))[:30]  # the figure shows the 30 commonest
    return LabelShift(
        "tokens",
        [label[i] for i in top],
        p_tr[top],
        p_te[top],
        0.5 * float(np.abs(p_tr - p_te).sum()),
        float("nan"),
        [],
        unseen,
    )


def value_shift(y_tr: Tensor, y_te: Tensor) -> LabelShift:
    """Two-sample Kolmogorov-Smirnov test of regression targets (each output column,
    the largest statistic reported), with their histograms on shared bins for the figure."""
    a = y_tr.reshape(len(y_tr), -1).double().numpy()
    b = y_te.reshape(len(y_te), -1).double().numpy()
    a, b = a[np.isfinite(a).all(1)], b[np.isfinite(b).all(1)]
    if len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        return LabelShift("values", [], np.zeros(0), np.zeros(0), 0.0, 1.0, [], [])
    res = [stats.ks_2samp(a[:, j], b[:, j]) for j in range(a.shape[1])]
    j = int(np.argmax([r.statistic for r in res]))
    p = min(1.0, float(res[j].pvalue) * len(res))  # Bonferroni over the output columns
    edges = np.histogram_bin_edges(np.concatenate([a[:, j], b[:, j]]), bins=20)
    h_tr = np.histogram(a[:, j], edges)[0] / len(a)
    h_te = np.histogram(b[:, j], edges)[0] / len(b)
    cats = [f"{(lo + hi) / 2:.3g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    shift = (b[:, j].mean() - a[:, j].mean()) / (a[:, j].std() or 1.0)
    named = [f"target {j}: mean {b[:, j].mean():.4g} vs {a[:, j].mean():.4g} ({shift:+.2f} sd)"]
    return LabelShift("values", cats, h_tr, h_te, float(res[j].statistic), p, named, [])


@dataclass
class InputShift:
    """Per channel/feature [C]: the moments of both splits and the differences."""

    mean_tr: np.ndarray
    mean_te: np.ndarray
    scale_tr: np.ndarray
    scale_te: np.ndarray
    smd: np.ndarray  # (mean_te - mean_tr) / scale_tr
    z_smd: np.ndarray  # smd / its standard error
    log_ratio: np.ndarray  # log(scale_te / scale_tr)
    z_ratio: np.ndarray
    judged: np.ndarray  # bool: the training scale is > 0 and both are finite


def input_shift(tr: tuple[np.ndarray, np.ndarray], te: tuple[np.ndarray, np.ndarray]) -> InputShift:
    """Standardised mean differences and log scale ratios, with standard errors over
    examples (module docstring)."""
    m_tr, v_tr, se_m_tr, se_lv_tr = _moments(*tr)
    m_te, v_te, se_m_te, se_lv_te = _moments(*te)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_tr, s_te = np.sqrt(v_tr), np.sqrt(v_te)
        smd = (m_te - m_tr) / s_tr
        z_smd = (m_te - m_tr) / np.sqrt(se_m_tr**2 + se_m_te**2)
        log_ratio = 0.5 * (np.log(v_te) - np.log(v_tr))
        z_ratio = log_ratio / (0.5 * np.sqrt(se_lv_tr**2 + se_lv_te**2))
    judged = (v_tr > 0) & np.isfinite(smd) & np.isfinite(log_ratio)
    return InputShift(m_tr, m_te, s_tr, s_te, smd, z_smd, log_ratio, z_ratio, judged)


def _moments(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """[C] mean, variance, the mean's standard error and log-variance's, from per-example
    channel means ``a`` [N, C] and mean squares ``b`` [N, C] (NaN rows ignored)."""
    n = np.maximum(np.isfinite(a).sum(0), 1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: NaN, not judged
        m, e2 = np.nanmean(a, 0), np.nanmean(b, 0)
        v = np.maximum(e2 - m * m, 0.0)
        da, db = a - m, b - e2
        var_a, var_b = np.nanmean(da * da, 0), np.nanmean(db * db, 0)
        cov = np.nanmean(da * db, 0)
        var_v = np.maximum(4 * m * m * var_a - 4 * m * cov + var_b, 0.0) / n
        return m, v, np.sqrt(var_a / n), np.sqrt(var_v) / v
