"""The paired patient bootstrap of a board: intervals, seeds, median and shared ranks, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from uqbench.leaderboard import bootstrap


def _draws(counts: list[list[int]]) -> bootstrap.Draws:
    return bootstrap.Draws(patients=["a", "b"], counts=np.array(counts), seed=0)


# Four resamples of the two patients a and b: {a, a}, {a, b}, {b, a}, {b, b}.
COUNTS = [[2, 0], [1, 1], [1, 1], [0, 2]]


def test_interval_of_a_mean_by_hand() -> None:
    # a's ED and ES score 0.9 and 0.7 (mean 0.8), b's 0.6 and 0.6: the resampled means are 0.8, 0.7, 0.7, 0.6.
    # numpy's linear percentiles of 4 values: 2.5 % at position 0.075 -> 0.6 + 0.075 x 0.1 = 0.6075,
    # 97.5 % at position 2.925 -> 0.7 + 0.925 x 0.1 = 0.7925
    stat = bootstrap.mean_of([0.9, 0.7, 0.6, 0.6])
    made = bootstrap.estimate([(stat, ["a", "a", "b", "b"])], _draws(COUNTS), row="r")
    assert made.value == pytest.approx(0.7)
    np.testing.assert_allclose(made.samples, [0.8, 0.7, 0.7, 0.6])
    assert (made.low, made.high) == (pytest.approx(0.6075), pytest.approx(0.7925))
    assert made.seeds == 1 and made.seed_sd == 0.0


def test_a_row_of_two_seeds_is_their_mean_and_draws_them_too() -> None:
    # seed 1 scores a 1.0, b 0.0; seed 2 scores a 0.5, b 0.5: full-data values 0.5 and 0.5, sd 0
    draws = _draws(COUNTS)
    seeds = [(bootstrap.mean_of([1.0, 0.0]), ["a", "b"]), (bootstrap.mean_of([0.5, 0.5]), ["a", "b"])]
    made = bootstrap.estimate(seeds, draws, row="r")
    assert made.value == 0.5 and made.seeds == 2 and made.seed_sd == 0.0
    # per resample, seed 1 gives 1, 0.5, 0.5, 0 and seed 2 always 0.5; each resample averages its drawn seeds
    chosen = draws.seeds("r", 2)
    per_seed = np.array([[1.0, 0.5, 0.5, 0.0], [0.5, 0.5, 0.5, 0.5]])
    expected = [per_seed[chosen[i], i].mean() for i in range(4)]
    np.testing.assert_allclose(made.samples, expected)
    assert draws.seeds("r", 2).tolist() == chosen.tolist()  # the same row draws the same seeds


def test_draws_keep_the_patient_count_and_are_the_same_for_every_row() -> None:
    d = bootstrap.draw(["p2", "p1", "p1", "p3"], resamples=50, seed=7)
    assert d.patients == ["p1", "p2", "p3"]
    assert (d.counts.sum(axis=1) == 3).all()
    assert d.counts.tolist() == bootstrap.draw(["p1", "p2", "p3"], resamples=50, seed=7).counts.tolist()
    assert d.counts.tolist() != bootstrap.draw(["p1", "p2", "p3"], resamples=50, seed=8).counts.tolist()
    # a patient's ED and ES share its weight
    np.testing.assert_array_equal(d.weights(["p1", "p1", "p3"])[:, 0], d.weights(["p1", "p1", "p3"])[:, 1])


def _estimate(value: float, samples: list[float]) -> bootstrap.Estimate:
    return bootstrap.Estimate(value=value, samples=np.array(samples), low=min(samples), high=max(samples),
                              seed_sd=0.0, seeds=1)


def test_shared_and_median_ranks_by_hand() -> None:
    # x is best; y's paired differences to x over the resamples are 0.1, 0.0, -0.05, 0.05 (2.5 % at -0.04625,
    # 97.5 % at 0.09625: includes 0, so y shares rank 1); z's are 0.3, 0.3, 0.2, 0.3 (all above 0: rank 3,
    # after the two rows ranked before it)
    x = _estimate(0.8, [0.8, 0.7, 0.7, 0.75])
    y = _estimate(0.75, [0.7, 0.7, 0.75, 0.7])
    z = _estimate(0.5, [0.5, 0.4, 0.5, 0.45])
    assert bootstrap.shared_ranks([z, y, x], higher=True) == [3, 1, 1]
    # per resample ranks of (x, y, z): (1, 2, 3), (1, 1, 3), (2, 1, 3), (1, 2, 3)
    np.testing.assert_array_equal(bootstrap.resampled_ranks([x.samples, y.samples, z.samples], higher=True),
                                  [[1, 1, 2, 1], [2, 1, 1, 2], [3, 3, 3, 3]])
    (mx, *_), (my, *_), (mz, lz, hz) = bootstrap.rank_summary([x.samples, y.samples, z.samples], higher=True)
    assert (mx, my, mz, lz, hz) == (1.0, 1.5, 3.0, 3.0, 3.0)
    # lower is better: the order turns round
    assert bootstrap.shared_ranks([z, y, x], higher=False) == [1, 2, 2]


def test_rank_interval_ends_are_ranks_some_resample_gave() -> None:
    # x ranks (1, 1, 2, 1) over four resamples: linear interpolation would put the 97.5 % end at 1.925, between
    # two ranks; the interval is [1, 2] instead. y ranks (2, 1, 1, 2): median 1.5, interval [1, 2].
    x = _estimate(0.8, [0.8, 0.7, 0.7, 0.75])
    y = _estimate(0.75, [0.7, 0.7, 0.75, 0.7])
    assert bootstrap.rank_summary([x.samples, y.samples], higher=True) == [(1.0, 1.0, 2.0), (1.5, 1.0, 2.0)]


def test_a_row_never_ranks_below_a_row_of_worse_value() -> None:
    # y trails x by exactly 0.01 in every resample (paired difference excludes 0); z is worse (0.82) but noisy, its
    # differences to x (0.15, -0.10, 0.10, -0.03) and to y (0.14, -0.11, 0.09, -0.04) include 0. Grouping every
    # row the best cannot be told from would give x, z rank 1 and y rank 3; the group stops at y instead.
    x = _estimate(0.85, [0.85, 0.80, 0.90, 0.85])
    y = _estimate(0.84, [0.84, 0.79, 0.89, 0.84])
    z = _estimate(0.82, [0.70, 0.90, 0.80, 0.88])
    assert bootstrap.shared_ranks([x, y, z], higher=True) == [1, 2, 2]
