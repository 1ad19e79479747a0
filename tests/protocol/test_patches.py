"""The 8 x 8 patch grid, including partial edge patches."""

from __future__ import annotations

import numpy as np

from uqbench.protocol.patches import expand, grid_shape, patch_max, patch_mean


def test_grid_covers_partial_edge_patches() -> None:
    assert grid_shape((44, 52)) == (6, 7)
    assert grid_shape((8, 16)) == (1, 2)


def test_patch_mean_averages_only_covered_voxels() -> None:
    a = np.zeros((10, 9))
    a[8:, :] = 1.0  # the bottom edge patches cover 2 rows, all ones
    m = patch_mean(a)
    assert m.shape == (2, 2)
    assert m[1, 0] == 1.0 and m[1, 1] == 1.0 and m[0, 0] == 0.0


def test_patch_max_flags_patch_with_one_true_voxel_and_expand_inverts() -> None:
    f = np.zeros((16, 16), bool)
    f[9, 3] = True
    g = patch_max(f) > 0
    assert g.tolist() == [[False, False], [True, False]]
    e = expand(g, (16, 16))
    assert e[8:, :8].all() and e.sum() == 64
