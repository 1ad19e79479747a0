"""The non-overlapping 8x8 patch grid a detector scores (paper section III-D).

A slice of Y x X voxels has ceil(Y/8) x ceil(X/8) patches; edge patches cover what is left.
"""

from __future__ import annotations

import numpy as np

from uqbench.api import PATCH


def grid_shape(shape_yx: tuple[int, ...], patch: int = PATCH) -> tuple[int, int]:
    return -(-shape_yx[0] // patch), -(-shape_yx[1] // patch)


def _blocks(arr: np.ndarray, patch: int, fill: float) -> np.ndarray:
    gy, gx = grid_shape(arr.shape, patch)
    padded = np.full((gy * patch, gx * patch), fill, dtype=np.float64)
    padded[: arr.shape[0], : arr.shape[1]] = arr
    return padded.reshape(gy, patch, gx, patch).transpose(0, 2, 1, 3)


def patch_max(arr: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Largest value per patch (for a bool map: whether the patch holds any True voxel)."""
    out: np.ndarray = _blocks(arr.astype(np.float64), patch, -np.inf).max(axis=(2, 3))
    return out


def patch_mean(arr: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Mean per patch over the voxels the patch really covers."""
    s = _blocks(arr.astype(np.float64), patch, 0.0).sum(axis=(2, 3))
    n = _blocks(np.ones(arr.shape), patch, 0.0).sum(axis=(2, 3))
    out: np.ndarray = s / n
    return out


def expand(grid: np.ndarray, shape_yx: tuple[int, ...], patch: int = PATCH) -> np.ndarray:
    """Patch values painted back onto a [Y, X] voxel grid."""
    return np.repeat(np.repeat(grid, patch, 0), patch, 1)[: shape_yx[0], : shape_yx[1]]
