"""In-plane resampling against scipy's map_coordinates, label resampling, inverse mapping, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from uqbench.data import preprocess as pp


def _reference_resample(vol: np.ndarray, spacing: tuple[float, float, float], target: float) -> np.ndarray:
    shape = pp.resampled_shape(vol.shape[1:], spacing[1:], target)
    coords = [(n_in - 1) / 2 + (np.arange(n_out) - (n_out - 1) / 2) * target / s
              for n_out, n_in, s in zip(shape, vol.shape[1:], spacing[1:], strict=True)]
    grid = np.meshgrid(np.arange(vol.shape[0]), *coords, indexing="ij")
    return ndimage.map_coordinates(vol.astype(np.float64), grid, order=1, mode="nearest")


@pytest.mark.parametrize("spacing", [(10.0, 1.5625, 1.5625), (5.0, 1.25, 1.8), (8.0, 0.7, 0.7)])
def test_image_resampling_matches_map_coordinates(spacing: tuple[float, float, float]) -> None:
    vol = np.random.default_rng(0).random((3, 37, 29)).astype(np.float32)
    ours = pp.resample_image(vol, spacing)
    assert ours.shape[1:] == (round(37 * spacing[1] / 1.4), round(29 * spacing[2] / 1.4))
    np.testing.assert_allclose(ours, _reference_resample(vol, spacing, 1.4), atol=1e-5)


def test_label_resampling_invents_no_value_and_keeps_area() -> None:
    yy, xx = np.mgrid[:60, :60]
    lab = np.zeros((1, 60, 60), np.uint8)
    lab[0][np.hypot(yy - 30, xx - 30) < 20] = 2
    lab[0][np.hypot(yy - 30, xx - 30) < 12] = 3
    out = pp.resample_labels(lab, (10.0, 1.75, 1.75))
    assert set(np.unique(out)) <= {0, 2, 3}
    area_mm2 = lambda a, s: (a == 3).sum() * s * s
    assert area_mm2(out, 1.4) == pytest.approx(area_mm2(lab, 1.75), rel=0.03)


def test_resampling_at_target_spacing_is_identity() -> None:
    lab = np.random.default_rng(1).integers(0, 4, (2, 20, 24)).astype(np.uint8)
    assert np.array_equal(pp.resample_labels(lab, (10, 1.4, 1.4)), lab)
    assert np.array_equal(pp.labels_to_original(lab, original_shape=lab.shape, spacing=(10, 1.4, 1.4)), lab)


def test_labels_round_trip_to_original_grid_nearly_exactly() -> None:
    yy, xx = np.mgrid[:90, :80]
    lab = np.zeros((2, 90, 80), np.uint8)
    lab[:, (np.hypot(yy - 45, xx - 40) < 25)] = 2
    lab[:, (np.hypot(yy - 45, xx - 40) < 15)] = 3
    spacing = (10.0, 1.62, 1.62)
    back = pp.labels_to_original(pp.resample_labels(lab, spacing), original_shape=lab.shape, spacing=spacing)
    assert (back == lab).mean() > 0.995


def test_normalise_clips_at_percentiles_to_unit_range() -> None:
    img = np.arange(101, dtype=np.float32)  # percentiles 1 and 99 are 1 and 99
    out = pp.normalise(img, 1, 99)
    assert out[0] == 0 and out[1] == 0 and out[99] == 1 and out[100] == 1
    assert out[50] == pytest.approx(49 / 98)
    assert not pp.normalise(np.full(10, 3.0)).any()


def test_params_fingerprint_changes_with_any_parameter() -> None:
    a = pp.PreprocessParams()
    assert a.fingerprint() == pp.PreprocessParams().fingerprint()
    assert a.fingerprint() != pp.PreprocessParams(high_percentile=95).fingerprint()
