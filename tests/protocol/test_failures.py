"""Each rule of the paper's failure definition on a hand-built slice."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from uqbench.bench.baselines import failure_map_loop
from uqbench.protocol.failures import PAPER, SEED_CODE, FailureRule, failure_map, preset


def _ring_volume(z: int = 3) -> np.ndarray:
    """z slices; slice 0 and 1 hold an LV disc (radius 8) on a 40 x 40 grid, the last slice is empty."""
    yy, xx = np.mgrid[:40, :40]
    disc = (np.hypot(yy - 20, xx - 20) < 8).astype(np.uint8) * 3
    vol = np.zeros((z, 40, 40), np.uint8)
    vol[: z - 1] = disc
    return vol


def test_errors_within_outside_tolerance_are_not_failures() -> None:
    ref = _ring_volume()
    pred = ref.copy()
    yy, xx = np.mgrid[:40, :40]
    pred[0][(np.hypot(yy - 20, xx - 20) < 10.5)] = 3  # 2-3 voxel dilation: tolerated (<= 3 outside)
    assert not failure_map(pred, ref)[0].any()


def test_large_cluster_beyond_outside_tolerance_is_a_failure() -> None:
    ref = _ring_volume()
    pred = ref.copy()
    pred[0, 2:6, 2:6] = 3  # 16 voxels far from the disc
    f = failure_map(pred, ref)[0]
    assert f[2:6, 2:6].all() and f.sum() == 16


def test_small_cluster_beyond_tolerance_is_not_a_failure_outside_apex() -> None:
    ref = _ring_volume(4)
    pred = ref.copy()
    pred[0, 2:5, 2:5] = 3  # 9 voxels < 10
    assert not failure_map(pred, ref)[0].any()


def test_inside_tolerance_is_two_voxels() -> None:
    ref = _ring_volume()
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 20)
    pred = ref.copy()
    pred[0][(r < 8) & (r >= 6.2)] = 0  # erode by about 2 voxels: tolerated
    assert not failure_map(pred, ref)[0].any()
    pred = ref.copy()
    pred[0][r < 8] = 0  # whole disc missed: deep voxels are failures, the 2-voxel rim is not
    f = failure_map(pred, ref)[0]
    assert f[20, 20] and not f[20, 13]


def test_apical_slice_counts_small_non_tolerated_clusters() -> None:
    ref = _ring_volume(4)  # slices 0-2 labelled: slice 2 is the apex
    pred = ref.copy()
    pred[2, 2:4, 2:4] = 3  # 4 voxels, far away
    f = failure_map(pred, ref)
    assert f[2].sum() == 4
    pred = ref.copy()
    pred[1, 2:4, 2:4] = 3
    assert not failure_map(pred, ref)[1].any()


def test_every_error_in_slices_without_reference_is_a_failure() -> None:
    ref = _ring_volume()
    pred = ref.copy()
    pred[2, 10, 10] = 2  # a single voxel below the apex
    assert failure_map(pred, ref)[2].sum() == 1


def test_cluster_size_counts_tolerated_error_voxels_of_the_same_class() -> None:
    ref = _ring_volume()
    pred = ref.copy()
    # a 1-voxel-wide strip from the disc edge outwards: 3 tolerated + 8 beyond = one 4-connected cluster of 11
    pred[0, 20, 28:39] = 3
    f = failure_map(pred, ref)[0]
    assert f[20, 32:39].all() and not f[20, 28:31].any()
    small = FailureRule(min_cluster=12)
    assert not failure_map(pred, ref, rule=small)[0].any()


def test_failure_map_is_or_over_classes() -> None:
    ref = _ring_volume()
    pred = ref.copy()
    pred[0, 2:6, 2:6] = 1  # RV where nothing is: an RV failure (RV absent from the reference slice)
    f = failure_map(pred, ref)[0]
    assert f[2:6, 2:6].all()



def _square(size: int = 24, *, rows: tuple[int, int] = (4, 16), cols: tuple[int, int] = (4, 16)) -> np.ndarray:
    """An LV square over ``rows`` x ``cols`` (end exclusive) in slices 0 and 1 (the apex), none in slice 2;
    the tests put their errors in slice 0, where every rule applies."""
    vol = np.zeros((3, size, size), np.uint8)
    vol[:2, rows[0]:rows[1], cols[0]:cols[1]] = 3
    return vol


def test_inside_distance_is_to_the_contour_not_to_the_nearest_outside_voxel() -> None:
    """Square rows/cols 4..15; its contour is rows 4 and 15 and cols 4 and 15. Missing rows 4..6 leaves errors
    at contour distance 0, 1, 2: all tolerated (the nearest voxel *outside*, row 3, is 3 away from row 6).
    Missing rows 4..7 adds row 7, 3 from row 4: beyond where the side contours are 3 or more away, cols 7..12."""
    ref = _square()
    pred = ref.copy()
    pred[0, 4:7, 4:16] = 0
    assert not failure_map(pred, ref).any()
    pred[0, 7, 4:16] = 0
    f = failure_map(pred, ref)
    assert f.sum() == 6 and f[0, 7, 7:13].all()


def test_a_structure_on_the_image_edge_has_its_contour_there() -> None:
    """Square cols 0..11: col 0 lies on the image edge and is contour, so missing cols 0..2 (distances 0, 1, 2)
    is tolerated; col 3 is 3 from the edge and, in rows 7..12, 3 or more from rows 4 and 15: 6 failures."""
    ref = _square(cols=(0, 12))
    pred = ref.copy()
    pred[0, 4:16, 0:3] = 0
    assert not failure_map(pred, ref).any()
    pred[0, 4:16, 3] = 0
    f = failure_map(pred, ref)
    assert f.sum() == 6 and f[0, 7:13, 3].all()


def test_seed_code_truncates_distance_minus_margin_toward_zero() -> None:
    """At 1.25 mm, errors 1..4 voxels right of the square (rows 6..8, cols 16..19) are 1.25..5 mm from the
    contour: 5 mm exceeds 4.6 mm by 0.4 mm, which truncates to 0, so nothing is beyond tolerance; without
    truncation the whole 12-voxel component fails. Col 20 (6.25 mm, 1.65 over) makes the component of 15 fail."""
    ref = _square()
    pred = ref.copy()
    pred[0, 6:9, 16:20] = 3
    assert not failure_map(pred, ref, rule=SEED_CODE, spacing=1.25).any()
    assert failure_map(pred, ref, rule=replace(SEED_CODE, truncate=False), spacing=1.25).sum() == 12
    pred[0, 6:9, 20] = 3
    assert failure_map(pred, ref, rule=SEED_CODE, spacing=1.25).sum() == 15


def test_seed_code_inside_margin_is_3_1_mm_at_the_given_spacing() -> None:
    """Missing rows 4..8 of the square (contour distances 0..4 voxels), cols 4..15: at 1 mm row 8 is 4 mm,
    0.9 over 3.1 (truncates to 0), so all are tolerated; at 2 mm row 7 is 6 mm, beyond, and the whole
    60-voxel component fails."""
    ref = _square()
    pred = ref.copy()
    pred[0, 4:9, 4:16] = 0
    assert not failure_map(pred, ref, rule=SEED_CODE, spacing=1.0).any()
    assert failure_map(pred, ref, rule=SEED_CODE, spacing=2.0).sum() == 60

# --- the seed-code preset, one rule per test -------------------------------------------------------

def test_seed_code_margins_are_in_mm() -> None:
    ref = _ring_volume()
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 20)
    # a 1-voxel-wide strip from the disc edge: distances 1..11 voxels = 1.4..15.4 mm
    pred = ref.copy()
    pred[0, 20, 28:39] = 3
    f = failure_map(pred, ref, rule=SEED_CODE, spacing=1.4)[0]
    assert f[20, 28:39].all()  # whole component: tolerated voxels included
    # at spacing 2 mm, 4.6 mm is 2.3 voxels: a 2-voxel dilation is tolerated; at 4 mm (1.15 voxels) it is not
    pred = ref.copy()
    pred[0][(r >= 8) & (r < 10)] = 3
    assert not failure_map(pred, ref, rule=SEED_CODE, spacing=2.0)[0].any()
    assert failure_map(pred, ref, rule=SEED_CODE, spacing=4.0)[0].any()


def test_seed_code_marks_whole_component_only_when_one_voxel_is_beyond_tolerance() -> None:
    ref = _ring_volume()
    pred = ref.copy()
    pred[0, 20, 28:31] = 3  # 3 voxels all within 4.6 mm
    pred[0, 19:23, 28:31] = 3  # 12-voxel component, every voxel within 3 voxels (4.2 mm) of the disc
    assert not failure_map(pred, ref, rule=SEED_CODE)[0].any()
    pred[0, 20, 31] = 3  # one voxel 4 voxels (5.6 mm) away joins it: the whole component fails
    f = failure_map(pred, ref, rule=SEED_CODE)[0]
    assert f[19:23, 28:31].all() and f[20, 31] and f.sum() == 13


def test_seed_code_needs_ten_voxels_outside_the_apex() -> None:
    ref = _ring_volume(4)
    pred = ref.copy()
    pred[0, 2:5, 2:5] = 3  # 9 voxels, far away
    assert not failure_map(pred, ref, rule=SEED_CODE)[0].any()
    pred[0, 5, 2] = 3  # 10
    assert failure_map(pred, ref, rule=SEED_CODE)[0].sum() == 10


def test_seed_code_apex_drops_distance_rule_and_needs_fifteen() -> None:
    ref = _ring_volume(4)  # apex is slice 2
    yy, xx = np.mgrid[:40, :40]
    ring = (np.hypot(yy - 20, xx - 20) >= 8) & (np.hypot(yy - 20, xx - 20) < 10)  # a 2-voxel dilation
    pred = ref.copy()
    pred[2][ring] = 3  # tolerated anywhere else, but not at the apex
    assert failure_map(pred, ref, rule=SEED_CODE)[2].sum() == ring.sum()
    pred = ref.copy()
    pred[1][ring] = 3
    assert not failure_map(pred, ref, rule=SEED_CODE)[1].any()
    pred = ref.copy()
    pred[2, 2:6, 2:5] = 3  # 12 voxels far away: below 15
    assert not failure_map(pred, ref, rule=SEED_CODE)[2].any()
    pred[2, 6, 2:5] = 3  # 15
    assert failure_map(pred, ref, rule=SEED_CODE)[2].sum() == 15


def test_seed_code_unlabelled_slices_keep_the_size_rule() -> None:
    ref = _ring_volume()  # slice 2 unlabelled
    pred = ref.copy()
    pred[2, 10, 10] = 2
    assert not failure_map(pred, ref, rule=SEED_CODE)[2].any()  # 1 voxel: the paper would flag it
    assert failure_map(pred, ref, rule=PAPER)[2].sum() == 1
    pred[2, 10:12, 10:15] = 2  # 10 voxels
    assert failure_map(pred, ref, rule=SEED_CODE)[2].sum() == 10


def test_seed_code_absent_class_errors_are_beyond_tolerance() -> None:
    ref = _ring_volume()
    pred = ref.copy()
    pred[0, 20, 28:30] = 1  # RV right next to the LV, where the reference has no RV: no tolerance for RV
    pred[0, 21:25, 28:30] = 1  # 10 voxels
    assert failure_map(pred, ref, rule=SEED_CODE)[0].sum() >= 10


def test_eight_connectivity_joins_diagonal_voxels() -> None:
    ref = _ring_volume()
    pred = ref.copy()
    for i in range(10):
        pred[0, 2 + i, 2 + i] = 3  # a diagonal line: ten 1-voxel clusters under 4-connectivity
    assert not failure_map(pred, ref)[0].any()
    assert failure_map(pred, ref, rule=replace(PAPER, connectivity=8))[0].sum() == 10


# --- versioning -----------------------------------------------------------------------------------

def test_rule_hash_is_stable_and_changes_with_any_parameter() -> None:
    assert PAPER.digest() == FailureRule().digest()
    assert replace(PAPER, name="renamed").digest() == PAPER.digest()
    changed = {replace(PAPER, outside=3.5).digest(), replace(PAPER, unit="mm").digest(),
               replace(PAPER, connectivity=8).digest(), replace(PAPER, min_cluster=11).digest(),
               replace(PAPER, mark="component").digest(), replace(PAPER, apical_tolerance=False).digest(),
               replace(PAPER, apical_min_cluster=2).digest(), replace(PAPER, unlabelled="size-rule").digest(),
               replace(PAPER, truncate=True).digest(), SEED_CODE.digest()}
    assert PAPER.digest() not in changed and len(changed) == 10
    assert PAPER.record()["hash"] == PAPER.digest()


def test_a_rule_recorded_under_the_old_definition_is_refused() -> None:
    """Version 1 measured inside distances to the nearest voxel outside the structure: its numbers are not
    comparable with today's, so its record no longer reads back."""
    old = PAPER.record() | {"definition_version": 1}
    with pytest.raises(ValueError, match="definition version 1; this uqbench has 2"):
        FailureRule.from_record(old)


def test_unknown_preset_and_bad_parameters_are_value_errors() -> None:
    with pytest.raises(ValueError, match="expected one of paper, seed-code"):
        preset("papr")
    with pytest.raises(ValueError, match="connectivity"):
        FailureRule(connectivity=6)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cluster sizes"):
        FailureRule(min_cluster=0)
    with pytest.raises(ValueError, match="differs"):
        failure_map(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


# --- the vectorised code against the literal per-slice loop ----------------------------------------

@pytest.mark.parametrize("rule", [PAPER, SEED_CODE, replace(PAPER, connectivity=8, mark="component")],
                         ids=["paper", "seed-code", "variant"])
def test_vectorised_failures_equal_the_per_slice_loop(rule: FailureRule) -> None:
    rng = np.random.default_rng(3)
    for _ in range(6):
        ref = np.zeros((6, 48, 52), np.uint8)
        yy, xx = np.mgrid[:48, :52]
        for z in range(1, 5):  # slices 0 and 5 unlabelled
            rad = 12 - 2 * z + rng.uniform(-1, 1)
            ref[z][np.hypot(yy - 24, xx - 26) < rad + 4] = 2
            ref[z][np.hypot(yy - 24, xx - 26) < rad] = 3
            ref[z][(np.hypot(yy - 24, xx - 10) < 5)] = 1
        pred = ref.copy()
        noise = ndimage.binary_dilation(rng.random(ref.shape) < 0.02, iterations=2)
        pred[noise] = rng.integers(0, 4, size=int(noise.sum()))
        pred[0, 30:34, 40:44] = 3
        if rng.random() < 0.5:  # structures cut by the image border
            ref, pred = np.roll(ref, 30, axis=2), np.roll(pred, 30, axis=2)
        got = failure_map(pred, ref, rule=rule, spacing=1.4)
        want = failure_map_loop(pred, ref, rule=rule, spacing=1.4)
        assert got.any() and np.array_equal(got, want)
