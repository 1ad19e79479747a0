"""Slice positions and the per-position breakdown, on volumes small enough to count by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uqbench.scoring.positions import position_table, slice_positions, slice_rows

SPACING = (10.0, 1.0, 1.0)  # one voxel is 0.01 mL


def _heart() -> tuple[np.ndarray, np.ndarray]:
    """Six 4 x 4 slices; the reference labels slices 1-4, its LV cavity larger in slice 1 (the base). RV: 3 voxels
    in slice 2, 2 in slice 3. The prediction: 2 RV voxels in slice 1 and 1 in slice 5 (neither slice holds reference
    RV), slice 2's RV exactly, none in slice 3."""
    ref = np.zeros((6, 4, 4), np.uint8)
    ref[1, :2, :2] = 3  # 4 LV voxels at the base
    ref[2, 0, 0] = ref[3, 0, 0] = 3
    ref[4, 0, 0] = 3  # 1 at the apex
    ref[2, 3, :3] = 1
    ref[3, 3, :2] = 1
    pred = ref.copy()
    pred[3, 3, :2] = 0
    pred[1, 3, :2] = 1
    pred[5, 3, 3] = 1
    return ref, pred


def test_thirds_run_from_the_end_with_more_lv_cavity() -> None:
    ref, _ = _heart()
    assert slice_positions(ref) == ["beyond", "basal", "mid", "mid", "apical", "beyond"]
    assert slice_positions(ref[::-1]) == ["beyond", "apical", "mid", "mid", "basal", "beyond"]


def test_a_heart_of_one_slice_is_basal_and_no_heart_is_beyond() -> None:
    one = np.zeros((3, 2, 2), np.uint8)
    one[1, 0, 0] = 2
    assert slice_positions(one) == ["beyond", "basal", "beyond"]
    assert slice_positions(np.zeros((2, 2, 2), np.uint8)) == ["beyond", "beyond"]


def test_rows_count_extra_and_missed_slices_by_hand() -> None:
    ref, pred = _heart()
    rows = {r["position"]: r for r in slice_rows(patient="p", phase="ES", fold=0, reference=ref, prediction=pred,
                                                   spacing=SPACING) if r["class"] == "RV"}
    b, m, a, o = rows["basal"], rows["mid"], rows["apical"], rows["beyond"]
    assert (b["slices"], b["reference_slices"], b["predicted_slices"], b["extra_slices"]) == (1, 0, 1, 1)
    assert b["extra_ml"] == pytest.approx(0.02) and b["predicted_ml"] == pytest.approx(0.02)
    assert (m["slices"], m["reference_slices"], m["predicted_slices"], m["missed_slices"]) == (2, 2, 1, 1)
    assert (m["reference_ml"], m["predicted_ml"], m["overlap_ml"]) == pytest.approx((0.05, 0.03, 0.03))
    assert a["reference_ml"] == a["predicted_ml"] == 0
    assert (o["slices"], o["extra_slices"]) == (2, 1) and o["extra_ml"] == pytest.approx(0.01)


def test_table_pools_volumes_and_removes_only_extra_voxels() -> None:
    ref, pred = _heart()
    table = {(r["class"], r["position"]): r for r in position_table(
        slice_rows(patient="p", phase="ES", fold=0, reference=ref, prediction=pred, spacing=SPACING))}
    rv = table[("RV", "all")]
    assert rv["dice_pooled"] == pytest.approx(2 * 3 / (5 + 6))  # 3 shared voxels of 5 reference and 6 predicted
    assert rv["mean_dice"] == pytest.approx(2 * 3 / (5 + 6))
    assert rv["mean_dice_without_extra"] == pytest.approx(2 * 3 / (5 + 3))
    assert rv["extra_share"] == pytest.approx(3 / 6) and rv["cases_with_extra"] == 1
    assert table[("RV", "basal")]["mean_dice"] == 0 and table[("RV", "basal")]["mean_dice_without_extra"] == 1
    assert table[("RV", "apical")]["cases"] == 0 and math.isnan(table[("RV", "apical")]["dice_pooled"])
    assert table[("LV", "all")]["dice_pooled"] == 1 and table[("LV", "all")]["extra_slices"] == 0
