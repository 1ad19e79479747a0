"""FROC points, average precision and simulated correction on tiny cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from uqbench.protocol.detection import (
    area_under,
    authors_average_precision,
    average_precision,
    check_patch_probabilities,
    correct,
    froc,
    precision_recall,
    slice_detection,
)


def _volume() -> tuple[np.ndarray, np.ndarray]:
    fails = np.zeros((1, 16, 16), bool)
    fails[0, 1, 1:4] = True  # 3 voxels in patch (0, 0)
    fails[0, 12, 12] = True  # 1 voxel in patch (1, 1)
    return np.array([[[0.9, 0.6], [0.2, 0.4]]]), fails


def test_froc_points_by_hand() -> None:
    probs, fails = _volume()
    out = froc([probs], [fails], np.array([0.3, 0.5, 0.95]))
    assert out.sensitivity == [1.0, 0.75, 0.0]
    assert out.false_positives_per_volume == [1.0, 1.0, 0.0]


def test_average_precision_by_hand() -> None:
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(np.array([0.9, 0.9]), np.array([1, 0])) == pytest.approx(0.5)  # ties move together
    assert np.isnan(average_precision(np.array([0.1]), np.array([0])))


def test_precision_recall_points_by_hand() -> None:
    got = precision_recall(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]), np.array([0.85, 0.65, 0.95]))
    assert got.precision == [1.0, 2 / 3, 1.0] and got.recall == [0.5, 1.0, 0.0]


def test_slice_detection_pools_and_averages_per_patient() -> None:
    f_pos = np.zeros((2, 8, 8), bool)
    f_pos[0, 0, 0] = True
    a = np.array([[[0.9]], [[0.8]]])  # patient a: the failing slice ranks first: AP 1
    b = np.array([[[0.95]], [[0.1]]])  # patient b: no failure
    got = slice_detection(["a", "b"], [a, b], [f_pos, np.zeros((2, 8, 8), bool)])
    assert got.ap_per_patient == 1.0 and got.patients_scored == 1 and got.patients_without_failure == 1
    assert got.ap_pooled == pytest.approx(0.5)  # pooled, b's 0.95 ranks first
    assert got.share_of_slices_with_failures == 0.25


def test_patch_correction_and_failures_only() -> None:
    pred = np.zeros((1, 16, 16), np.uint8)
    ref = np.ones_like(pred)
    flagged = np.array([[[True, False], [False, False]]])
    fixed = correct(pred, ref, flagged)
    assert fixed[0, :8, :8].all() and fixed.sum() == 64
    fails = np.zeros(pred.shape, bool)
    fails[0, 2, 2] = fails[0, 12, 12] = True
    only = correct(pred, ref, flagged, mode="failures-only", failures=fails)
    assert only.sum() == 1 and only[0, 2, 2] == 1
    with pytest.raises(ValueError, match="expected one of patch, failures-only"):
        correct(pred, ref, flagged, mode="all")  # type: ignore[arg-type]


def test_area_under_sorts_by_x() -> None:
    assert area_under([1.0, 0.0, 0.5], [1.0, 0.0, 1.0]) == pytest.approx(0.25 + 0.5)


def test_bad_patch_probabilities_are_value_errors() -> None:
    with pytest.raises(ValueError, match="p1 ES: patch probabilities of shape"):
        check_patch_probabilities(np.zeros((1, 2, 3)), (1, 16, 16), "p1 ES")
    with pytest.raises(ValueError, match="NaN or values outside"):
        check_patch_probabilities(np.full((1, 2, 2), 1.2), (1, 16, 16), "p1 ES")


def _three_volumes() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A: 3 failure voxels in a patch at 0.9. B: 1 failure voxel in a patch at 0.2, a clean patch at 0.6.
    C: no failure, a clean patch at 0.7 (and one at exactly 0.5)."""
    probs, fails = [np.zeros((1, 2, 2)) for _ in range(3)], [np.zeros((1, 16, 16), bool) for _ in range(3)]
    probs[0][0, 0, 0], fails[0][0, 1, 1:4] = 0.9, True
    probs[1][0, 0, 0], probs[1][0, 1, 1], fails[1][0, 3, 3] = 0.2, 0.6, True
    probs[2][0, 1, 0], probs[2][0, 0, 1] = 0.7, 0.5
    return probs, fails


def test_per_volume_froc_averages_each_volumes_detection_rate_over_volumes_with_failures() -> None:
    probs, fails = _three_volumes()
    pooled = froc(probs, fails, np.array([0.5]))
    per = froc(probs, fails, np.array([0.5]), convention="per-volume")
    assert pooled.sensitivity == [0.75]  # 3 of 4 failure voxels
    assert per.sensitivity == [0.5]  # A: 1, B: 0; C holds no failure and is left out
    assert pooled.false_positives_per_volume == per.false_positives_per_volume == [pytest.approx(2 / 3)]
    at_or_above = froc(probs, fails, np.array([0.5]), convention="per-volume", flag=">=")
    assert at_or_above.false_positives_per_volume == [1.0]  # C's patch at exactly 0.5 now counts


def test_the_authors_slice_ap_by_hand() -> None:
    """Thresholds 1, 0.5, 0 (high to low). V1 scores (0.9+, 0.3); V2 (0.6, 0.8+); V3 (0.7) has no positive.
    Mean precision 1, 1/2, 1/3 and mean recall 1/3, 1, 1: AP = 1 * 1/3 + 1/2 * 2/3 + 1/3 * 0 = 2/3."""
    vols = [(np.array([0.9, 0.3]), np.array([True, False])), (np.array([0.6, 0.8]), np.array([False, True])),
            (np.array([0.7]), np.array([False]))]
    assert authors_average_precision(vols, np.array([0.0, 0.5, 1.0]), flag=">=") == pytest.approx(2 / 3)
    assert authors_average_precision(vols[:2], np.array([0.0, 0.5, 1.0]), flag=">=") == pytest.approx(0.75)


def test_slice_detection_reports_the_ap_of_its_convention_beside_the_exact_ones() -> None:
    probs = [np.array([[[0.9]], [[0.3]]]), np.array([[[0.6]], [[0.8]]])]
    fails = [np.zeros((2, 8, 8), bool) for _ in range(2)]
    fails[0][0, 0, 0] = fails[1][1, 0, 0] = True
    exact = slice_detection(["p1", "p2"], probs, fails)
    assert exact.ap == exact.ap_per_patient == 1.0 and exact.ap_convention == "exact-per-patient"
    authors = slice_detection(["p1", "p2"], probs, fails, convention="authors-40",
                              thresholds=np.array([0.0, 0.5, 1.0]), flag=">=")
    assert authors.ap == pytest.approx(0.75) and authors.ap_per_patient == 1.0
    assert authors.share_of_slices_with_failures_per_volume == 0.5
