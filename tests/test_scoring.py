"""The one scoring function on tiny cases computed by hand: metrics and volumes in original geometry, failure
labels (paper section V-B) on the written labels brought onto the 1.4 mm grid, the grid map and the reliability
counts. Every expected number below is worked out in the comments, not by uqbench."""

from __future__ import annotations

import numpy as np
import pytest

from uqbench.data.cache import Prepared
from uqbench.data.preprocess import PreprocessParams
from uqbench.protocol.failures import FailureRule
from uqbench.scoring.case import score_case, sum_counts

LV = 3


def _prepared(original: np.ndarray, grid: np.ndarray, spacing: tuple[float, float, float]) -> Prepared:
    return Prepared(patient="patient001", phase="ED", group="DCM", original_image=np.zeros(original.shape, np.float32),
                    labels=grid, original_labels=original, spacing=spacing, affine=np.eye(4), height=None,
                    weight=None, header=None, fingerprint="hand-made")


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return (np.arange(4)[:, None, None, None] == labels[None]).astype(np.float32)


def _reference(n: int, lo: int, hi: int) -> np.ndarray:
    """4 slices of n x n: an LV square [lo, hi) in slices 0-2 (z = 0 the base, z = 2 the apex); slice 3 empty."""
    ref = np.zeros((4, n, n), np.uint8)
    ref[:3, lo:hi, lo:hi] = LV
    return ref


def test_failures_are_the_clusters_the_paper_rule_names_on_a_grid_equal_to_the_original() -> None:
    # In-plane spacing 1.4 mm: the grid is the original. LV is rows/cols 8..15 in slices 0-2 (192 voxels).
    ref = _reference(24, 8, 16)
    pred = ref.copy()
    pred[0, 20:22, 1:7] = LV  # 12 voxels, >= 5 voxels from the contour, one cluster >= 10: all 12 fail
    pred[1, 1:4, 1:4] = LV  # 9 voxels beyond tolerance, but a cluster < 10 and not the apex: none fail
    pred[2, 1, 1:3] = LV  # the apical slice: non-tolerated errors fail whatever the cluster size: 2 fail
    pred[3, 1, 1] = LV  # a slice without reference labels: every error fails: 1 fails
    pred[0, 16, 8:16] = LV  # 8 voxels just outside the contour (distance 1 <= 3): tolerated
    expected = np.zeros(ref.shape, bool)
    expected[0, 20:22, 1:7] = expected[2, 1, 1:3] = expected[3, 1, 1] = True

    got = score_case(_prepared(ref, ref, (10.0, 1.4, 1.4)), fold=0, labels=pred, probabilities=_one_hot(pred),
                     uncertainty=None, rule=FailureRule(), params=PreprocessParams())

    assert np.array_equal(got.volume.failures, expected)
    lv = next(r for r in got.rows if r["class"] == "LV")
    # Dice = 2 * 192 / (192 + 192 + 12 + 9 + 2 + 1 + 8) = 384 / 416
    assert lv["dice"] == pytest.approx(384 / 416)
    assert lv["reference_voxels"] == 192 and lv["predicted_voxels"] == 224
    assert lv["reference_ml"] == pytest.approx(192 * 10 * 1.4 * 1.4 / 1000)  # 3.7632 mL
    assert got.volume.uncertainty.size == 0  # no map given
    counts, brier, n = got.calibration if got.calibration is not None else pytest.fail("no counts")
    # one-hot probabilities: each of the 32 wrong voxels adds (1 - 0)^2 for LV and (0 - 1)^2 for background
    assert brier == pytest.approx(2 * 32) and n == 4 * 24 * 24
    assert counts[LV, -1].tolist() == [224, 192, 224]  # top bin: sum of p, positives, voxels


def test_failures_are_found_on_the_written_labels_resampled_as_the_reference_was() -> None:
    # In-plane spacing 0.7 mm: each grid voxel (i, j) is the one-hot mean of original rows 2i..2i+1 and
    # cols 2j..2j+1 (centres aligned, step 2), so a block aligned to even indices is one grid voxel per 2 x 2.
    ref = _reference(48, 16, 32)  # LV grid rows/cols 8..15, as in the test above
    grid_ref = ref[:, ::2, ::2].copy()
    pred = ref.copy()
    pred[0, 40:44, 2:14] = LV  # 48 original voxels = grid rows 20-21, cols 1-6: 12 grid voxels, all fail
    umap = np.full(ref.shape, 0.25, np.float32)
    umap[0, 40:44, 2:14] = 1.0
    expected = np.zeros(grid_ref.shape, bool)
    expected[0, 20:22, 1:7] = True

    got = score_case(_prepared(ref, grid_ref, (10.0, 0.7, 0.7)), fold=2, labels=pred, probabilities=None,
                     uncertainty=umap, rule=FailureRule(), params=PreprocessParams())

    assert np.array_equal(got.volume.failures, expected)
    assert np.array_equal(got.volume.prediction_grid, pred[:, ::2, ::2])
    lv = next(r for r in got.rows if r["class"] == "LV")
    assert lv["dice"] == pytest.approx(2 * 768 / (768 + 816))  # Dice in original geometry: 768 + 48 predicted
    assert lv["reference_ml"] == pytest.approx(768 * 10 * 0.7 * 0.7 / 1000)  # the same 3.7632 mL
    assert got.volume.uncertainty.dtype == np.float16
    assert np.array_equal(got.volume.uncertainty, np.where(expected, 1.0, 0.25).astype(np.float16))
    assert got.calibration is None and got.volume.fold == 2


def test_a_prediction_equal_to_the_reference_has_no_failures_after_resampling() -> None:
    # A ring (myocardium around LV) at 0.7 mm: written labels equal to the reference resample to the same grid,
    # so no failure can come from resampling alone.
    ref = _reference(48, 16, 32)
    ref[:3, 12:36, 12:16] = 2
    grid_ref = ref[:, ::2, ::2].copy()
    got = score_case(_prepared(ref, grid_ref, (10.0, 0.7, 0.7)), fold=0, labels=ref.copy(), probabilities=None,
                     uncertainty=None, rule=FailureRule(), params=PreprocessParams())
    assert not got.volume.failures.any()
    assert all(r["dice"] == 1.0 for r in got.rows if r["reference_voxels"])


def test_summed_reliability_counts_do_not_depend_on_the_order_of_cases() -> None:
    # Brier sums 0.1, 0.2 and 0.3: added left to right in floats, (0.1 + 0.2) + 0.3 = 0.6000000000000001 while
    # 0.3 + 0.2 + 0.1 = 0.6; a run sums per fold and evaluate per file, so only the correctly rounded 0.6 lets both
    # agree. The counts array and the voxel count are summed the same way.
    cases = [(np.full((1, 1, 3), v), v, 10) for v in (0.1, 0.2, 0.3)]
    assert (0.1 + 0.2) + 0.3 != 0.6
    for order in (cases, cases[::-1], [cases[1], cases[0], cases[2]]):
        total = sum_counts(order)
        assert total is not None
        assert total[1] == 0.6 and total[2] == 30 and (total[0] == 0.6).all()
    assert sum_counts([]) is None
