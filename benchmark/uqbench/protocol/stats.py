"""Significance of corrected against segmentation-only results (paper section IV).

Per metric, class and phase over volumes: the two-sided Mann-Whitney U test, as the paper (it treats the
two sets as independent), and the two-sided Wilcoxon signed-rank test, which uses the pairing (same
volume before and after correction) and is the better-suited test. When every pair is equal (nothing
changed) the Wilcoxon p-value is 1 by definition here, since the test statistic does not exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Two-sided p-values of paired samples of size ``n`` (NaN below 2)."""

    n: int
    mann_whitney_p: float
    wilcoxon_p: float


def compare(before: Sequence[float], after: Sequence[float]) -> Comparison:
    """p-values of Mann-Whitney U and paired Wilcoxon between two equally long, paired samples."""
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if b.shape != a.shape or b.ndim != 1:
        raise ValueError(f"paired test: {b.size} values before against {a.size} after")
    if not (np.isfinite(b).all() and np.isfinite(a).all()):
        raise ValueError("paired test: NaN or infinite values")
    n = int(b.size)
    if n < 2:
        return Comparison(n=n, mann_whitney_p=math.nan, wilcoxon_p=math.nan)
    mw = float(stats.mannwhitneyu(b, a, alternative="two-sided").pvalue)
    wx = 1.0 if np.all(b == a) else float(stats.wilcoxon(b, a, alternative="two-sided").pvalue)
    return Comparison(n=n, mann_whitney_p=mw, wilcoxon_p=wx)
