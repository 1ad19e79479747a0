"""FROC points, average precision and simulated correction on tiny cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from uqbench.protocol.detection import (
    area_under,
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
