"""Significance tests against exact hand-computed p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from uqbench.protocol.stats import compare, mann_whitney_p


def test_exact_p_values_of_a_complete_separation() -> None:
    got = compare([1.0, 2.0, 3.0, 4.0, 5.0], [6.5, 7.0, 8.0, 9.5, 10.0])
    assert got.mann_whitney_p == pytest.approx(2 / 252)  # 2 of C(10, 5) orderings are as extreme
    assert got.wilcoxon_p == pytest.approx(2 / 32)  # all 5 differences of one sign: 2 of 2^5


def test_nothing_changed_gives_wilcoxon_one() -> None:
    assert compare([0.8, 0.9, 0.7], [0.8, 0.9, 0.7]).wilcoxon_p == 1.0


def test_bad_samples_are_value_errors() -> None:
    with pytest.raises(ValueError, match="3 values before against 2"):
        compare([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        compare([1.0, float("nan")], [1.0, 2.0])


def test_the_legacy_one_sided_p_value_is_the_old_normal_approximation_by_hand() -> None:
    """scipy < 1.7's default: U = max(U1, U2), z = (U - n1 n2 / 2 - 1/2) / sd, p = P(Z > z), with the tie
    correction sd^2 = n1 n2 / 12 * (n + 1 - sum(t^3 - t) / (n (n - 1)))."""
    assert mann_whitney_p(np.array([1.0, 2, 3]), np.array([4.0, 5, 6]), "one-sided-legacy") == \
        pytest.approx(norm.sf((9 - 4.5 - 0.5) / math.sqrt(9 * 7 / 12)))
    assert mann_whitney_p(np.array([1.0, 2, 3]), np.array([4.0, 5, 6])) == pytest.approx(2 / 20)  # exact, two-sided
    # ranks 1.5 1.5 3.5 | 3.5 5.5 5.5: U1 = 0.5, U2 = 8.5; three ties of two
    tied = math.sqrt(9 / 12 * (7 - 3 * 6 / (6 * 5)))
    assert mann_whitney_p(np.array([1.0, 1, 2]), np.array([2.0, 3, 3]), "one-sided-legacy") == \
        pytest.approx(norm.sf((8.5 - 4.5 - 0.5) / tied))
    assert compare([1.0, 2, 3], [4.0, 5, 6], mann_whitney="one-sided-legacy").mann_whitney_p < 0.05
