"""Significance of corrected against segmentation-only results (paper section IV).

Per metric, class and phase over volumes: the Mann-Whitney U test, as the paper (it treats the two sets as
independent), and the two-sided Wilcoxon signed-rank test, which uses the pairing (same volume before and
after correction) and is the better-suited test. When every pair is equal (nothing changed) the Wilcoxon
p-value is 1 by definition here, since the test statistic does not exist.

Mann-Whitney sidedness (the protocol preset's ``mann_whitney``): ``two-sided`` (scipy's default since 1.7:
exact for small samples without ties, otherwise the normal approximation), or ``one-sided-legacy``: what
``mannwhitneyu(x, y)`` returned before scipy 1.7, as the authors' eval_detection/helpers.py calls it: the
normal approximation with tie and continuity correction, one-sided in the direction of the larger U, which
is half the asymptotic two-sided p-value (so at most 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

MannWhitney = Literal["two-sided", "one-sided-legacy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """p-values of paired samples of size ``n`` (NaN below 2); Mann-Whitney's sidedness is the caller's."""

    n: int
    mann_whitney_p: float
    wilcoxon_p: float


def mann_whitney_p(x: np.ndarray, y: np.ndarray, sided: MannWhitney = "two-sided") -> float:
    """The Mann-Whitney U p-value of samples ``x`` and ``y`` (module docstring for ``sided``)."""
    if sided == "one-sided-legacy":
        two = stats.mannwhitneyu(x, y, use_continuity=True, alternative="two-sided", method="asymptotic").pvalue
        return float(two) / 2
    return float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)


def compare(before: Sequence[float], after: Sequence[float], *, mann_whitney: MannWhitney = "two-sided"
            ) -> Comparison:
    """p-values of Mann-Whitney U and paired Wilcoxon between two equally long, paired samples."""
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if b.shape != a.shape or b.ndim != 1:
        raise ValueError(f"paired test: {b.size} values before against {a.size} after")
    if not (np.isfinite(b).all() and np.isfinite(a).all()):
        raise ValueError("paired test: NaN or infinite values")
    n = int(b.size)
    if n < 2:
        return Comparison(n=n, mann_whitney_p=math.nan, wilcoxon_p=math.nan)
    mw = mann_whitney_p(b, a, mann_whitney)
    wx = 1.0 if np.all(b == a) else float(stats.wilcoxon(b, a, alternative="two-sided").pvalue)
    return Comparison(n=n, mann_whitney_p=mw, wilcoxon_p=wx)
