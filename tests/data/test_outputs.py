"""Writing predictions back: float maps mapped to original geometry, NIfTI storage in fixed steps."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from uqbench.data import nifti
from uqbench.data.preprocess import map_to_original, resample_image


def test_quantised_nifti_round_trips_within_half_a_step(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((4, 3, 5, 6)).astype(np.float32)
    probs /= probs.sum(0)
    affine = np.diag([1.5, 1.4, 10.0, 1.0])
    nifti.write(tmp_path / "p.nii.gz", probs, affine, quantum=1e-3)
    img = nib.load(str(tmp_path / "p.nii.gz"))
    assert img.get_data_dtype() == np.int16 and img.shape == (6, 5, 3, 4)
    back = np.asarray(img.dataobj).transpose(3, 2, 1, 0)
    assert np.abs(back - probs).max() <= 5e-4 + 1e-7
    with pytest.raises(ValueError, match="too large for int16 steps"):
        nifti.write(tmp_path / "big.nii.gz", np.full((2, 2, 2), 100.0), affine, quantum=1e-3)


def test_maps_return_to_original_geometry_as_probabilities() -> None:
    rng = np.random.default_rng(1)
    spacing = (10.0, 1.25, 1.6)
    probs = rng.random((4, 3, 40, 50)).astype(np.float32)
    probs /= probs.sum(0)
    grid = np.stack([resample_image(p, spacing) for p in probs])
    back = map_to_original(grid, original_shape=(3, 40, 50), spacing=spacing)
    assert back.shape == (4, 3, 40, 50)
    np.testing.assert_allclose(back.sum(0), 1.0, atol=1e-5)  # interpolation weights sum to one
    assert back.min() >= 0 and back.max() <= 1
    np.testing.assert_allclose(map_to_original(np.full((3, *grid.shape[2:]), 0.3), original_shape=(3, 40, 50),
                                               spacing=spacing), 0.3,
                               atol=1e-6)
