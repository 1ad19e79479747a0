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


def test_outputs_keep_a_source_header_whose_voxel_size_is_only_in_pixdim(tmp_path: Path) -> None:
    """As ACDC's files: a unit-scale sform (code 2), no qform, the voxel size only in pixdim."""
    src = nib.Nifti1Header()
    src.set_data_shape((6, 5, 3))
    src.set_zooms((1.5625, 1.5625, 10.0))
    src.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
    src.set_qform(None, code=0)
    src.set_data_dtype(np.float32)
    src.set_slope_inter(2.0, 0.0)  # the source's scaling must not carry over to the outputs
    labels = np.zeros((3, 5, 6), np.uint8)
    labels[1, 1:3, 2:5] = 3  # 6 voxels of 1.5625 x 1.5625 x 10 mm
    nifti.write(tmp_path / "l.nii.gz", labels, np.eye(4), header=bytes(src.binaryblock))
    nifti.write(tmp_path / "p.nii.gz", np.full((4, 3, 5, 6), 0.25), np.eye(4), header=bytes(src.binaryblock),
                quantum=1e-3)
    back = nib.load(str(tmp_path / "l.nii.gz"))
    assert back.header.get_zooms() == (1.5625, 1.5625, 10.0) and back.get_data_dtype() == np.uint8
    assert int(back.header["sform_code"]) == 2 and int(back.header["qform_code"]) == 0
    assert np.array_equal(back.affine, src.get_best_affine())
    data, spacing, _ = nifti.read(tmp_path / "l.nii.gz")
    assert np.array_equal(data, labels) and spacing == (10.0, 1.5625, 1.5625)
    assert (data == 3).sum() * np.prod(spacing) / 1000 == pytest.approx(0.146484375)  # mL
    probs = nib.load(str(tmp_path / "p.nii.gz"))
    assert probs.header.get_zooms()[:3] == (1.5625, 1.5625, 10.0) and probs.get_data_dtype() == np.int16
    np.testing.assert_allclose(np.asarray(probs.dataobj), 0.25, atol=5e-4)
    # without a source header, the affine gives the voxel size (the phantom's files)
    nifti.write(tmp_path / "a.nii.gz", labels, np.diag([1.5, 1.4, 10.0, 1.0]))
    assert nib.load(str(tmp_path / "a.nii.gz")).header.get_zooms() == (1.5, 1.4, 10.0)
