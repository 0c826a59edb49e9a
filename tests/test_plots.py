"""trackcheck's own figures: a series that spans orders of magnitude is drawn on an axis
that shows all of it, and compared series share one Axes."""

from __future__ import annotations

import math

from trackcheck import plots


def test_a_loss_that_jumps_a_million_fold_is_drawn_on_a_log_axis() -> None:
    # a diverged run: 2.3 at init, 3.5e7 at step 1, back near 2 after; on a linear axis
    # everything but the spike sits on 0 and the run looks like it learned
    fig = plots.curves({"real inputs": [2.3, 3.5e7, 1e4, 2.0], "blanked": [2.3, 4e7, 9e3, 2.1]},
                       "training loss")  # fmt: skip
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert "log scale" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["real inputs", "blanked"]


def test_a_loss_that_only_decreases_a_little_stays_linear() -> None:
    (ax,) = plots.curves({"loss": [2.3, 1.9, 1.2, 0.4]}, "training loss").axes
    assert ax.get_yscale() == "linear" and ax.get_ylabel() == "loss"


def test_values_through_zero_spanning_decades_get_a_symlog_axis() -> None:
    assert plots.y_scale([-3.0, 0.0, 0.02, 5e4])[0] == "symlog"
    assert plots.y_scale([-3.0, 0.0, 0.02, 5e4])[1] == 0.01  # linear below the smallest order


def test_non_finite_values_do_not_decide_the_scale() -> None:
    assert plots.y_scale([2.3, 2.0, math.nan, math.inf]) == ("linear", 0.0)
    assert plots.y_scale([]) == ("linear", 0.0)
