"""One pass over the test set and the human metric with its standard error and 95% interval.

Shared by full_eval and human_baseline (the leading underscore keeps it out of the registry).

The per-example metric comes from the task: 1/0 correct for classification (an LM sequence
gives its share of correct next tokens, a value in [0, 1]) or the absolute error for
regression. Intervals:

* 0/1 values (accuracy): Wilson score interval, with the binomial SE sqrt(p(1-p)/n). Wilson
  rather than p +- 1.96 SE because it stays inside [0, 1] and keeps its coverage near p = 0 or 1
  (Brown, Cai & DasGupta 2001), which is where a good model's accuracy and a human's sit.
* any other values (MAE, token accuracy per sequence): mean +- t(0.975, n-1) x sample SE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trackcheck import plots
from trackcheck._lazy import lazy_module
from trackcheck.checks._shared._fingerprint import row_fingerprints
from trackcheck.context import Context
from trackcheck.tasks import Binary, Multiclass, Regression, Task

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from scipy import stats
else:  # scipy is imported when a test is computed, not with the checks
    stats = lazy_module("scipy.stats")

CONFIDENCE = 0.95
# the normal quantile (1.96) from the standard library: no scipy import with the module
Z95 = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)  # scipy's norm.ppf to 4e-16


@dataclass(frozen=True)
class Estimate:
    """A metric's mean over ``n`` examples, its standard error and its 95% interval."""

    mean: float
    se: float
    lo: float
    hi: float
    n: int
    method: str  # "wilson" (0/1 values) or "t" (anything else)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def __str__(self) -> str:
        ci = f"95% CI [{self.lo:.4g}, {self.hi:.4g}]"
        return f"{self.mean:.4g} +- {self.se:.2g} SE ({ci}, n={self.n})"

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat numbers for the tracker: ``<prefix>``, ``<prefix>_se``, ``..._ci_lo``, ..."""
        return {
            prefix: self.mean,
            f"{prefix}_se": self.se,
            f"{prefix}_ci_lo": self.lo,
            f"{prefix}_ci_hi": self.hi,
            f"{prefix}_n": float(self.n),
        }


def estimate(values: Tensor) -> Estimate:
    """Mean of per-example values [N] with its SE and 95% interval (see the module doc)."""
    v = values.detach().reshape(-1).double().cpu()
    n = len(v)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0, "none")
    mean = float(v.mean())
    if bool(((v == 0) | (v == 1)).all()):
        k = int(v.sum())
        se = math.sqrt(mean * (1 - mean) / n)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
        return Estimate(mean, se, float(ci.low), float(ci.high), n, "wilson")
    if n < 2:
        return Estimate(mean, math.nan, math.nan, math.nan, n, "t")
    se = float(v.std(unbiased=True)) / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se
    return Estimate(mean, se, mean - half, mean + half, n, "t")


@dataclass
class TestPass:
    """What one pass of the eval loader saw, per example, in loader order."""

    metric: Tensor  # [N] the task's human metric per example (float64, CPU)
    targets: Tensor  # [N] or [N, T] targets as the loader gave them (CPU)
    fingerprints: list[str] = field(default_factory=list)  # one per example, if asked
    n_batches: int = 0


@torch.no_grad()
def evaluate(
    ctx: Context, model: nn.Module, batch_size: int | None = None, fingerprints: bool = False
) -> TestPass:
    """Run ``model`` in eval mode over ``ctx.data.test_loader()``, exactly as it iterates."""
    model.eval()
    metrics, targets, prints, n_batches = [], [], [], 0
    for batch in ctx.data.test_loader(batch_size=batch_size):
        if fingerprints:
            prints += row_fingerprints(batch)  # before the device copy: the loader's own bytes
        x, y = ctx.split(batch)
        metrics.append(ctx.task.per_example_metric(ctx.forward(model, x), y).double().cpu())
        targets.append(y.cpu())
        n_batches += 1
    if not n_batches:
        raise ValueError("the test loader yielded no batch: is the test set empty?")
    return TestPass(torch.cat(metrics), torch.cat(targets), prints, n_batches)


def metric_range(task: Task) -> tuple[float, float]:
    """The values the human metric can take: [0, 1] for accuracies, [0, inf) for MAE."""
    return (0.0, 1.0) if task.classification else (0.0, math.inf)


def labels_as_outputs(task: Task, labels: Tensor) -> Tensor:
    """Model-shaped outputs that predict exactly ``labels``, so ``task.per_example_metric``
    scores one annotation against another: one-hot logits [N, C] (or [N, T, V]) whose argmax is
    the label, a logit of +-1 for binary, the values themselves for regression."""
    if isinstance(task, Multiclass):  # LanguageModeling included
        return F.one_hot(labels.long(), task.num_classes).float()
    if isinstance(task, Binary):
        return labels.float() * 2 - 1
    if isinstance(task, Regression):
        return labels.float()
    raise TypeError(f"no way to score annotations for task {task.name!r}")


def invalid_labels(task: Task, labels: Tensor) -> str:
    """Why ``labels`` cannot be an annotation for ``task`` ('' when they can)."""
    if labels.is_floating_point() and not bool(torch.isfinite(labels).all()):
        return "it contains NaN/Inf"
    if isinstance(task, Multiclass):
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            return "it holds non-integer class ids"
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= task.num_classes:
            return f"class ids range over [{lo}, {hi}], outside [0, {task.num_classes - 1}]"
    if isinstance(task, Binary) and not bool(((labels == 0) | (labels == 1)).all()):
        return "binary labels must be 0 or 1"
    return ""


def per_class_figure(
    metric: Tensor, targets: Tensor, class_names: list[str] | None, title: str
) -> Figure:
    """Accuracy per true class with Wilson 95% error bars and each class's count: the error
    bars show how many digits each per-class number can carry."""
    classes = sorted(int(c) for c in targets.unique())
    ests = [estimate(metric[targets == c]) for c in classes]
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in classes]
    ticks = [f"{nm}\nn={e.n}" for nm, e in zip(names, ests, strict=True)]
    # each bar as wide as its two-line tick label (a class name, its count), so none overlap
    slot = max(0.45, plots.text_inches([t for tick in ticks for t in tick.split("\n")], 7) + 0.1)
    # wide enough for its bars and for its title
    width = max(4.0, slot * len(classes) + 1.5, plots.text_inches([title], 10) + 1.0)
    fig, ax = plots.figure(width, 3.2, bottom=0.7)
    pos = np.arange(len(classes))
    means = np.array([e.mean for e in ests])
    err = np.array([[e.mean - e.lo for e in ests], [e.hi - e.mean for e in ests]])
    ax.bar(pos, means, yerr=err, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(pos, ticks, fontsize=7)
    ax.set(xlabel="true class", ylabel="accuracy (95% CI)", ylim=(0, 1.05))
    ax.set_title(title, fontsize=10)
    return fig


def histogram_figure(metric: Tensor, est: Estimate, xlabel: str, title: str) -> Figure:
    """Histogram of the per-example metric with its mean and 95% interval marked."""
    fig, ax = plots.figure(max(5.0, plots.text_inches([title], 10) + 1.0))  # the title fits
    ax.hist(metric.numpy(), bins=min(40, max(10, len(metric) // 10)), color="tab:blue", alpha=0.8)
    ax.axvline(est.mean, color="k", lw=1.5, label=f"mean {est.mean:.4g}")
    ax.axvspan(est.lo, est.hi, color="tab:orange", alpha=0.3, label="95% CI of the mean")
    ax.set(xlabel=xlabel, ylabel="examples")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig
