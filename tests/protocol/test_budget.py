"""The correction-budget curve, AUCC@B, nAUCC and the volume-level AURC, worked out by hand on tiny volumes."""

from __future__ import annotations

import numpy as np
import pytest

from uqbench.protocol import budget, detection, metrics

# A 2-slice volume of 8 x 16 voxels at the grid's own spacing: each slice holds two 8 x 8 patches,
# A and B (slice 0), C and D (slice 1); patch indices 0, 1, 2, 3.
#   A: reference 64 LV; prediction 48 LV + 16 background        (16 LV false negatives)
#   B: reference background; prediction 8 LV                    (8 LV false positives)
#   C: reference 64 MYO; prediction the same                    (correct)
#   D: reference 32 RV + 32 background; prediction 16 RV        (16 RV false negatives)
# Before correction: LV 2*48 / (2*48 + 8 + 16) = 4/5, MYO 1, RV 2*16 / (2*16 + 16) = 2/3:
#   D(0) = (4/5 + 1 + 2/3) / 3 = 37/45.
SPACING = (10.0, 1.4, 1.4)


def _volume() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((2, 8, 16), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, :, :8] = 3
    pred[0, :6, :8] = 3  # A: 48 of 64
    pred[0, :1, 8:] = 3  # B: 8 false positives
    ref[1, :, :8] = pred[1, :, :8] = 2  # C
    ref[1, :4, 8:] = 1  # D: 32 RV
    pred[1, :2, 8:] = 1  # 16 of them found
    return pred, ref


def _curves(rank: list[int]) -> budget.VolumeCurves:
    pred, ref = _volume()
    fp = budget.footprint((2, 8, 16), (8, 16), spacing=SPACING, target=1.4)
    return budget.volume_curves(fp, pred, ref, mode="patch", failures=None, rank=np.array(rank))


def _dice(lv: float, myo: float, rv: float) -> float:
    return (lv + myo + rv) / 3


D0 = _dice(4 / 5, 1, 2 / 3)
AFTER_A = _dice(2 * 64 / (2 * 64 + 8), 1, 2 / 3)  # LV: 64 TP, 8 FP
AFTER_B = _dice(2 * 48 / (2 * 48 + 16), 1, 2 / 3)  # LV: 48 TP, 16 FN
AFTER_AB = _dice(1, 1, 2 / 3)
AFTER_BD = _dice(2 * 48 / (2 * 48 + 16), 1, 1)
AFTER_D = _dice(4 / 5, 1, 1)
AFTER_AD = _dice(2 * 64 / (2 * 64 + 8), 1, 1)


def test_the_curve_of_each_order_by_hand() -> None:
    # The seeded permutation visits B, D, A, C (ranks: A 2, B 0, C 3, D 1).
    c = _curves([2, 0, 3, 1])
    assert c.changed.tolist() == [16, 8, 0, 16]
    # random: B, D, A, C
    np.testing.assert_allclose(c.dice(c.order("random")), [D0, AFTER_B, AFTER_BD, 1, 1])
    # oracle: most voxels changed first; A and D tie at 16 and D comes first in the permutation: D, A, B, C
    np.testing.assert_allclose(c.dice(c.order("oracle")), [D0, AFTER_D, AFTER_AD, 1, 1])
    # detector: A 0.9, B 0.2, C 0.9, D 0.1; A and C tie at 0.9 and A comes first: A, C, B, D
    probs = np.array([[[0.9, 0.2]], [[0.9, 0.1]]])
    detector = c.dice(c.order("detector", probs))
    np.testing.assert_allclose(detector, [D0, AFTER_A, AFTER_A, AFTER_AB, 1])
    # AUCC@2 = mean of D(0), D(1), D(2)
    aucc, random, oracle = (budget.aucc(detector, 2), budget.aucc(c.dice(c.order("random")), 2),
                            budget.aucc(c.dice(c.order("oracle")), 2))
    assert aucc == pytest.approx((D0 + 2 * AFTER_A) / 3)  # 0.853595
    assert random == pytest.approx((D0 + AFTER_B + AFTER_BD) / 3)  # 0.871958
    assert oracle == pytest.approx((D0 + AFTER_D + AFTER_AD) / 3)  # 0.911982
    # nAUCC = (0.8535948 - 0.8719577) / (0.9119826 - 0.8719577) = -0.0183629 / 0.0400249 = -0.458787: worse
    # than random
    assert budget.normalised(aucc, random, oracle) == pytest.approx(-0.458787, abs=1e-6)
    # past the volume's 4 patches the curve stays at its last value: AUCC@6 = (D0 + 2 A + AB + 3 x 1) / 7
    assert budget.aucc(detector, 6) == pytest.approx((D0 + 2 * AFTER_A + AFTER_AB + 3) / 7)


def test_a_constant_detector_is_exactly_the_random_order() -> None:
    c = _curves([2, 0, 3, 1])
    for value in (0.0, 0.5, 1.0):
        constant = c.dice(c.order("detector", np.full((2, 1, 2), value)))
        np.testing.assert_array_equal(constant, c.dice(c.order("random")))
    assert budget.normalised(budget.aucc(constant, 2), budget.aucc(c.dice(c.order("random")), 2), 1.0) == 0.0


def test_flagging_every_patch_below_the_top_b_cannot_raise_aucc() -> None:
    """Flooding the operating point with every other patch buys Dice at p > 0.5 (the old ranking figure) but
    leaves AUCC@B alone for every B up to the detector's own top patches."""
    rng = np.random.default_rng(3)
    ref = np.zeros((3, 40, 48), np.uint8)
    ref[:, 8:30, 10:36] = 1
    ref[:, 12:26, 14:30] = 2
    ref[:, 15:23, 17:27] = 3
    pred = ref.copy()
    pred[rng.random(ref.shape) < 0.05] = 0
    pred[:, 28:34, 30:40] = 3
    fp = budget.footprint(ref.shape, (40, 48), spacing=SPACING, target=1.4)
    c = budget.volume_curves(fp, pred, ref, mode="patch", failures=None,
                             rank=budget.permutation_rank(fp.patches, seed=0, patient="p", phase="ED"))
    probs = rng.random((3, 5, 6)) * 0.4
    top = np.argsort(-probs.ravel())[:4]
    probs.ravel()[top] = [0.99, 0.98, 0.97, 0.96]
    flooded = np.where(probs < 0.9, 0.95, probs)  # every other patch flagged at p > 0.5, below the top 4
    honest, greedy = c.dice(c.order("detector", probs)), c.dice(c.order("detector", flooded))
    assert greedy[fp.patches] > honest[4]  # correcting all it flags: a higher corrected Dice at the operating point
    for b in (1, 2, 3, 4):
        assert budget.aucc(greedy, b) == budget.aucc(honest, b)


def test_the_curve_is_the_dice_of_the_corrected_volume_at_every_budget() -> None:
    """Against ``metrics.dice`` of the labels ``corrected`` returns, and (at the grid's own spacing) against the
    grid correction ``detection.correct``."""
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 4, (2, 20, 27)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, 4, ref.shape)).astype(np.uint8)
    failures = rng.random(ref.shape) < 0.5
    fp = budget.footprint(ref.shape, (20, 27), spacing=SPACING, target=1.4)
    for mode in detection.MODES:
        c = budget.volume_curves(fp, pred, ref, mode=mode, failures=failures,
                                 rank=budget.permutation_rank(fp.patches, seed=1, patient="p", phase="ES"))
        order = c.order("oracle")
        curve = c.dice(order)
        for b in range(fp.patches + 1):
            flags = np.zeros(fp.patches, bool)
            flags[order[:b]] = True
            flags = flags.reshape(2, 3, 4)
            fixed = budget.corrected(fp, pred, ref, flags=flags, mode=mode, failures=failures)
            np.testing.assert_array_equal(fixed, detection.correct(pred, ref, flags, mode=mode, failures=failures))
            assert curve[b] == pytest.approx(np.mean([metrics.dice(fixed, ref, k) for k in (1, 2, 3)]))


def test_footprints_follow_the_nearest_grid_voxel() -> None:
    # 5 original voxels of 1.75 mm on a 1.4 mm grid of 6: positions 2.5 + (i - 2) * 1.25 = 0, 1.25, 2.5, 3.75, 5
    # round (half up) to grid voxels 0, 1, 3, 4, 5
    assert budget.nearest_grid_index(5, 6, 1.75 / 1.4).tolist() == [0, 1, 3, 4, 5]
    # 20 original rows of 0.7 mm on a grid of 10 rows: two original rows per grid row, 8 grid rows per patch
    fp = budget.footprint((1, 20, 4), (10, 2), spacing=(10.0, 0.7, 2.8), target=1.4)
    assert fp.patches == 2  # patch rows 0 (grid rows 0-7) and 1 (rows 8-9); one patch column
    assert fp.patch[0, :, 0].tolist() == [0] * 16 + [1] * 4


def test_volume_aurc_by_hand() -> None:
    # scores 0.1, 0.2, 0.2, 0.9 with risks 0, 0.4, 0.2, 0.6. Kept in order; the tied pair is kept in expectation:
    #   k=1: 0/1; k=2: (0 + 0.6/2)/2 = 0.15; k=3: 0.6/3 = 0.2; k=4: 1.2/4 = 0.3  ->  AURC = 0.65/4 = 0.1625
    # ordered by risk: 0, 0.2, 0.4, 0.6 -> 0, 0.1, 0.2, 0.3  ->  0.15, so e-AURC = 0.0125
    scores, risks = [0.1, 0.2, 0.2, 0.9], [0.0, 0.4, 0.2, 0.6]
    assert budget.selective_aurc(scores, risks) == pytest.approx(0.1625)
    assert budget.excess_aurc(scores, risks) == pytest.approx(0.0125)
    assert budget.selective_aurc([0.5] * 4, risks) == pytest.approx(0.3)  # a constant score: the mean risk


def test_the_permutation_is_the_volumes_own_and_reproducible() -> None:
    a = budget.permutation_rank(50, seed=0, patient="patient001", phase="ED")
    assert sorted(a.tolist()) == list(range(50))
    assert a.tolist() == budget.permutation_rank(50, seed=0, patient="patient001", phase="ED").tolist()
    assert a.tolist() != budget.permutation_rank(50, seed=0, patient="patient001", phase="ES").tolist()
    assert a.tolist() != budget.permutation_rank(50, seed=1, patient="patient001", phase="ED").tolist()
