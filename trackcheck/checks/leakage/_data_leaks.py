"""The measurements behind the leakage check: test examples found in the training split
(exact content hashes; nearest neighbours for small float data), and input coordinates
that determine the target. The check (this package's __init__) judges them.

Every overlap is measured against a reference from the training split itself: the share of
training examples with a copy (or near copy) ELSEWHERE in the training split. Under a random
split the test and training examples are exchangeable, so a test example has a copy in the
training split with the same probability as a training example has one among the others:
genuine duplicate rows in a dataset raise both shares alike, and only an excess of the test
share over it is leakage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trackcheck._lazy import lazy_module
from trackcheck.checks._shared._data_read import SplitData

if TYPE_CHECKING:
    from scipy import stats
else:  # scipy is imported when a test is computed, not with the checks
    stats = lazy_module("scipy.stats")


@dataclass
class Overlap:
    """Test examples with a (near) copy in the training split."""

    kind: str  # "exact" | "near"
    n_test: int  # test examples looked up
    test_rows: np.ndarray  # [k] rows (of the read test data) with a copy in train
    train_rows: np.ndarray  # [k] the row of one such copy in the read train data
    n_ref: int  # training examples whose copies elsewhere in train were counted
    k_ref: int  # ... and how many had one
    note: str = ""

    @property
    def share(self) -> float:
        return len(self.test_rows) / max(self.n_test, 1)

    @property
    def ref_share(self) -> float:
        """The reference share, add-one smoothed (a reference of 0 of 2000 is not 0)."""
        return (self.k_ref + 1) / (self.n_ref + 2)

    @property
    def excess(self) -> float:
        return self.share - self.ref_share

    @property
    def p_value(self) -> float:
        """One-sided binomial test: more test examples with a copy than the reference says."""
        k = len(self.test_rows)
        if k == 0:
            return 1.0
        return float(stats.binomtest(k, self.n_test, self.ref_share, "greater").pvalue)


def exact_overlap(tr: SplitData, te: SplitData) -> Overlap:
    """Test examples whose content hash occurs in the training split."""
    uniq, first, counts = np.unique(tr.hashes, return_index=True, return_counts=True)
    pos = np.searchsorted(uniq, te.hashes).clip(0, max(len(uniq) - 1, 0))
    hit = uniq[pos] == te.hashes if len(uniq) else np.zeros(len(te.hashes), bool)
    rows = np.flatnonzero(hit)
    return Overlap(
        "exact",
        len(te.hashes),
        rows,
        first[pos[rows]],
        len(tr.hashes),
        int(counts[counts > 1].sum()),
    )


def near_overlap(
    tr: SplitData, te: SplitData, queries: int, budget: float, frac: float, g: np.random.Generator
) -> Overlap | str:
    """Test examples closer to a training example than ``frac`` x the median distance from a
    training example to its nearest OTHER training example (inputs standardised per
    coordinate with the training statistics), on at most ``queries`` test and as many
    training queries against the whole training split; a reason string when it cannot run."""
    if tr.flat is None or te.flat is None or tr.is_float is None or not tr.is_float.any():
        return "near-duplicates not searched: the inputs are not float, or wider than 1024 values"
    cols = tr.is_float
    base = tr.flat[:, cols]
    n_tr, d = base.shape
    q = int(min(queries, budget / max(n_tr * d, 1) / 2))
    if q < 64 or n_tr < 3:
        return (
            f"near-duplicates not searched: {n_tr} training examples x {d} values is over "
            "the budget (checks.leakage.nn_budget)"
        )
    finite = np.isfinite(base)
    mu = np.where(finite, base, 0).sum(0) / np.maximum(finite.sum(0), 1)
    sd = np.sqrt(np.where(finite, (base - mu) ** 2, 0).sum(0) / np.maximum(finite.sum(0), 1))
    sd[~(sd > 0)] = 1.0  # constant coordinates: their distance is 0 whatever the scale

    def standardised(v: np.ndarray) -> np.ndarray:  # NaN/Inf values count as the mean
        return np.nan_to_num((v - mu) / sd, posinf=0.0, neginf=0.0).astype(np.float32)

    z, zq_te = standardised(base), standardised(te.flat[:, cols])
    te_rows = np.sort(g.choice(len(zq_te), min(q, len(zq_te)), replace=False))
    ref_rows = np.sort(g.choice(n_tr, min(q, n_tr), replace=False))
    d_te, j_te = _nearest(zq_te[te_rows], z)
    d_ref, _ = _nearest(z[ref_rows], z, exclude=ref_rows)
    d_ref, d_te = d_ref[np.isfinite(d_ref)], d_te
    tau = frac * float(np.median(d_ref)) if len(d_ref) else 0.0
    if not tau > 0:
        return "near-duplicates not searched: most training examples have an exact copy"
    hit = d_te <= tau
    return Overlap(
        "near",
        len(te_rows),
        te_rows[hit],
        j_te[hit],
        len(d_ref),
        int((d_ref <= tau).sum()),
        note=f"within {tau:.3g}, {frac:g} x the median nearest-neighbour distance in train",
    )


def _nearest(
    q: np.ndarray, base: np.ndarray, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distance to, and row of, each query's nearest row of ``base`` ([Q], [Q]); ``exclude``:
    the base row each query must not match (itself). NumPy, one BLAS product: torch's
    thread pool stalls on a busy machine (cdist took 0.24 s here where 5 ms will do)."""
    d2 = (q * q).sum(1)[:, None] + (base * base).sum(1)[None, :] - 2 * q @ base.T  # [Q, N]
    if exclude is not None:
        d2[np.arange(len(q)), exclude] = np.inf
    j = d2.argmin(1)
    return np.sqrt(np.maximum(d2[np.arange(len(q)), j], 0.0)), j


@dataclass
class Determining:
    """An input coordinate that determines the target on one split."""

    split: str
    name: str
    how: str  # in words, with the numbers
    score: float  # ratio to an independent coordinate (classification) or 1 - |rho|


def determining_coords(
    split: str,
    data: SplitData,
    classification: bool,
    max_rows: int,
    tol: float,
    min_rho: float,
    max_categories: int,
    max_within_share: float,
    g: np.random.Generator,
) -> tuple[list[Determining], dict[str, float]]:
    """Coordinates of the inputs that determine the target, or (classification) that the
    label determines; and each test's best coordinate score (the margins, for the metrics)."""
    if data.flat is None or data.y.dim() > 2 or (data.y.dim() == 2 and data.y.shape[1] != 1):
        return [], {}
    y = data.y.reshape(len(data.y)).double().numpy()
    rows = np.arange(len(y))
    if len(rows) > max_rows:
        rows = np.sort(g.choice(len(rows), max_rows, replace=False))
    x, y = data.flat[rows], y[rows]  # float32: a sort per coordinate is the cost here
    keep = np.isfinite(y) & (y != -100) if classification else np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(y) < 20:
        return [], {}
    if not classification:
        found, best = _rank_correlation(split, data.coord_names, x, y, min_rho)
        return found, {"best_coordinate_score": best}
    found, best = _sorted_label_changes(split, data.coord_names, x, y, tol, max_categories, g)
    of_label, within = _label_functions(split, data.coord_names, x, y, max_within_share)
    flagged = {d.name for d in found}
    found += [d for d in of_label if d.name not in flagged]
    return found, {"best_coordinate_score": best, "best_within_class_share": within}


def _sorted_label_changes(
    split: str,
    names: list[str],
    x: np.ndarray,
    y: np.ndarray,
    tol: float,
    max_cat: int,
    g: np.random.Generator,
) -> tuple[list[Determining], float]:
    """Sort the examples by each coordinate (ties in random order) and count where the label
    changes between neighbours: a coordinate independent of the label changes it at
    (N - 1)(1 - sum_c p_c^2) places on average; one that determines it only between its
    K classes' ranges (K - 1), or between its V values when it takes few (V - 1)."""
    n = len(y)
    _, cls = np.unique(y, return_inverse=True)
    p = np.bincount(cls) / n
    chance = (n - 1) * (1 - float((p * p).sum()))
    if len(p) < 2 or chance < 1:
        return [], float("nan")
    perm = g.permutation(n)  # rows in random order, then a stable sort: ties stay random
    x, cls = x[perm], cls[perm]
    order = np.argsort(x, axis=0, kind="stable")  # [N, P]
    ys = cls[order]
    changes = (ys[1:] != ys[:-1]).sum(0)  # [P]
    xs = np.take_along_axis(x, order, 0)
    values = (xs[1:] != xs[:-1]).sum(0) + 1  # [P] distinct values
    floor = np.where(values <= max_cat, np.maximum(values, len(p)), len(p)) - 1
    score = np.maximum(changes - floor, 0) / chance  # [P] 0: determines, ~1: independent
    # a coordinate with so many values that a pure map of them needs a quarter of the
    # changes an independent one makes cannot be told apart from one: not judged
    score[floor > chance / 4] = np.inf
    found = [
        Determining(
            split,
            names[j],
            f"sorted by it, the label changes {changes[j]} times in {n} examples (a coordinate "
            f"independent of the label: ~{chance:.0f}; one that determines it: {floor[j]})",
            float(score[j]),
        )
        for j in np.argsort(score)
        if score[j] <= tol
    ]
    return found, float(score.min())


def _label_functions(
    split: str, names: list[str], x: np.ndarray, y: np.ndarray, max_share: float
) -> tuple[list[Determining], float]:
    """Coordinates that are a function of the label: their variance within the classes is
    at most ``max_share`` of their total variance (1 - the correlation ratio eta^2). The
    sorted test misses these when the label is not a function of the coordinate: a one-hot
    label copied into C inputs, each of which singles out one class only."""
    _, cls = np.unique(y, return_inverse=True)
    x = x.astype(np.float64)  # [N, P]
    counts = np.bincount(cls).astype(np.float64)  # [K]
    means = np.zeros((len(counts), x.shape[1]))
    np.add.at(means, cls, x)
    means /= counts[:, None]  # [K, P] class means
    within = ((x - means[cls]) ** 2).sum(0)  # [P]
    total = ((x - x.mean(0)) ** 2).sum(0)  # [P]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, within / total, np.inf)  # a constant coordinate: not judged
    found = [
        Determining(
            split,
            names[j],
            f"the label determines it: its variance within the classes is {share[j]:.2%} of "
            "its total variance (a real feature keeps most of it)",
            float(share[j]),
        )
        for j in np.argsort(share)
        if share[j] <= max_share
    ]
    return found, float(share.min()) if share.size else float("nan")


def _rank_correlation(
    split: str, names: list[str], x: np.ndarray, y: np.ndarray, min_rho: float
) -> tuple[list[Determining], float]:
    """Spearman's rank correlation of each coordinate with a regression target."""
    rx = stats.rankdata(x, axis=0)
    ry = stats.rankdata(y)
    rx, ry = rx - rx.mean(0), ry - ry.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry[:, None]).sum(0) / np.sqrt((rx * rx).sum(0) * (ry * ry).sum())
    rho = np.nan_to_num(np.abs(rho))  # a constant coordinate: 0
    found = [
        Determining(
            split,
            names[j],
            f"its rank correlation with the target is {rho[j]:.5f}",
            1 - float(rho[j]),
        )
        for j in np.argsort(-rho)
        if rho[j] >= min_rho
    ]
    return found, 1 - float(rho.max())
