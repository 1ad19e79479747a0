"""Preprocessing (paper section II) and its inverse: every metric is computed in original geometry.

- In-plane resampling of every slice to 1.4 x 1.4 mm; slices are never resampled through-plane.
  The new grid is centred on the original field of view: new index j sits at original index
  ``c_old + (j - c_new) * 1.4 / s`` with ``c = (n - 1) / 2`` and ``n_new = round(n * s / 1.4)``.
  Images use linear interpolation. Label maps are resampled one class at a time as one-hot
  channels with linear interpolation and the arg-max is taken, so no label value is invented and
  boundaries do not staircase as they would with nearest neighbour. The inverse maps a label map
  on the 1.4 mm grid back onto the original grid the same way.
- Intensity normalisation per volume to [0, 1] after clipping at the 1st and 99th percentiles.
  The full paper scales by the volume's minimum and maximum, the preliminary paper by the 5th and
  95th percentiles. On ACDC the maximum is set by a handful of hot voxels (bright fat, flow
  artefacts), which squeezes the blood-myocardium contrast of min/max scaling; the 95th percentile
  already lies inside the bright blood pool and flattens it. 1/99 keeps the blood pool's texture
  and is robust to outliers; both are parameters and part of the cache fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from uqbench.api import NUM_CLASSES


@dataclass(frozen=True, slots=True, kw_only=True)
class PreprocessParams:
    """Everything that decides the prepared data; its hash keys the cache."""

    spacing: float = 1.4  # mm, in-plane target
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    levels: int = 64  # grey levels the normalised image is stored with (see uqbench.data.cache)
    version: int = 1  # bump when the code's output changes for the same parameters

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def resampled_shape(shape_yx: tuple[int, int], spacing_yx: tuple[float, float], target: float) -> tuple[int, int]:
    """In-plane shape on the ``target`` mm grid."""
    ny, nx = (max(1, int(round(n * s / target))) for n, s in zip(shape_yx, spacing_yx, strict=True))
    return ny, nx


def _interp_matrix(n_out: int, n_in: int, step: float) -> np.ndarray:
    """[n_out, n_in] linear-interpolation weights: centres aligned, ``step`` input voxels per output
    voxel, positions outside the input clamped to its edge."""
    pos = np.clip((n_in - 1) / 2 + (np.arange(n_out) - (n_out - 1) / 2) * step, 0, n_in - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    w = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(w, (np.arange(n_out), lo), 1 - frac)
    np.add.at(w, (np.arange(n_out), hi), frac)
    return w


def _resample(vol: np.ndarray, shape_yx: tuple[int, int], step_yx: tuple[float, float]) -> np.ndarray:
    """Linear in-plane resampling of a float [Z, Y, X] volume onto ``shape_yx``; z is untouched.

    Separable interpolation as two small matrix products per slice (exact bilinear weights)."""
    wy = _interp_matrix(shape_yx[0], vol.shape[1], step_yx[0])
    wx = _interp_matrix(shape_yx[1], vol.shape[2], step_yx[1])
    return np.matmul(np.matmul(wy, vol.astype(np.float32)), wx.T)


def resample_image(image: np.ndarray, spacing: tuple[float, float, float], target: float = 1.4) -> np.ndarray:
    """Float32 image [Z, Y, X] resampled in-plane to ``target`` mm."""
    shape = resampled_shape(image.shape[1:], spacing[1:], target)
    step = (target / spacing[1], target / spacing[2])
    return _resample(image.astype(np.float32), shape, step).astype(np.float32)


def _resample_labels(labels: np.ndarray, shape_yx: tuple[int, int], step_yx: tuple[float, float]) -> np.ndarray:
    best = np.full((labels.shape[0], *shape_yx), -1.0, dtype=np.float32)
    out = np.zeros((labels.shape[0], *shape_yx), dtype=np.uint8)
    for c in range(NUM_CLASSES):
        score = _resample((labels == c).astype(np.float32), shape_yx, step_yx)
        better = score > best
        out[better] = c
        best[better] = score[better]
    return out


def resample_labels(labels: np.ndarray, spacing: tuple[float, float, float], target: float = 1.4) -> np.ndarray:
    """uint8 label map [Z, Y, X] resampled in-plane to ``target`` mm (one-hot linear, arg-max)."""
    shape = resampled_shape(labels.shape[1:], spacing[1:], target)
    return _resample_labels(labels, shape, (target / spacing[1], target / spacing[2]))


def labels_to_original(labels: np.ndarray, *, original_shape: tuple[int, int, int],
                       spacing: tuple[float, float, float], target: float = 1.4) -> np.ndarray:
    """Map a label map on the ``target`` mm grid back onto the original [Z, Y, X] grid."""
    if labels.shape[0] != original_shape[0]:
        raise ValueError(f"slice count {labels.shape[0]} differs from the original {original_shape[0]}")
    return _resample_labels(labels, original_shape[1:], (spacing[1] / target, spacing[2] / target))


def map_to_original(values: np.ndarray, *, original_shape: tuple[int, int, int],
                    spacing: tuple[float, float, float], target: float = 1.4) -> np.ndarray:
    """Map a float map [..., Z, Y', X'] on the ``target`` mm grid back onto the original [Z, Y, X] grid by
    linear interpolation (weights sum to 1, so probabilities stay probabilities and maps stay in range)."""
    if values.shape[-3] != original_shape[0]:
        raise ValueError(f"slice count {values.shape[-3]} differs from the original {original_shape[0]}")
    lead = values.shape[:-3]
    flat = values.reshape(-1, *values.shape[-2:]).astype(np.float32)
    out = _resample(flat, original_shape[1:], (spacing[1] / target, spacing[2] / target))
    return out.reshape(*lead, *original_shape)


def normalise(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Clip to the [low, high] percentiles of the volume and scale to [0, 1] (a flat volume gives 0)."""
    lo, hi = np.percentile(image, [low, high])
    if hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    return ((np.clip(image, lo, hi) - lo) / (hi - lo)).astype(np.float32)
