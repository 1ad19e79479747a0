"""Each rule of the paper's failure definition on a hand-built slice."""

from __future__ import annotations

import numpy as np

from uqbench.protocol.failures import FailureRule, failure_map


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
    assert not failure_map(pred, ref, small)[0].any()


def test_failure_map_is_or_over_classes() -> None:
    ref = _ring_volume()
    pred = ref.copy()
    pred[0, 2:6, 2:6] = 1  # RV where nothing is: an RV failure (RV absent from the reference slice)
    f = failure_map(pred, ref)[0]
    assert f[2:6, 2:6].all()
