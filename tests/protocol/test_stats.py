"""Significance tests against exact hand-computed p-values."""

from __future__ import annotations

import pytest

from uqbench.protocol.stats import compare


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
