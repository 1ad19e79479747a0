"""Reading the ACDC layout and naming every damaged file (the rules behind `uqbench data check`)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from uqbench.data import layout, nifti
from uqbench.errors import DataError


def _gt(root: Path, patient: str = "patient001", frame: int = 1) -> Path:
    return root / patient / f"{patient}_frame{frame:02d}_gt.nii.gz"


def _img(root: Path, patient: str = "patient001", frame: int = 1) -> Path:
    return root / patient / f"{patient}_frame{frame:02d}.nii.gz"


def test_clean_phantom_reads_with_geometry_and_info(tiny_phantom: Path) -> None:
    found, patients, volumes = layout.problems(tiny_phantom)
    assert found == [] and patients == 4 and volumes == 8
    case = next(layout.iter_cases(tiny_phantom))
    img = nib.load(str(_img(tiny_phantom)))
    assert case.image.shape == img.shape[::-1] and case.image.dtype == np.float32
    assert case.spacing == pytest.approx(img.header.get_zooms()[::-1])
    assert np.allclose(case.affine, img.affine) and case.group == "DCM" and case.height is not None


def test_truncated_image_is_named(phantom_copy: Path) -> None:
    p = _img(phantom_copy)
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    found, _, _ = layout.problems(phantom_copy)
    assert len(found) == 1 and found[0].startswith(f"{p}: unreadable NIfTI")


def test_missing_gt_is_named(phantom_copy: Path) -> None:
    _gt(phantom_copy).unlink()
    found, _, volumes = layout.problems(phantom_copy)
    assert found == [f"{_gt(phantom_copy)}: missing (ED frame 1 named in Info.cfg)"] and volumes == 7


def test_label_value_outside_range_is_named(phantom_copy: Path) -> None:
    p = _gt(phantom_copy)
    data, _, affine = nifti.read(p)
    data[0, 0, 0] = 7
    nifti.write(p, data, affine)
    assert layout.problems(phantom_copy)[0] == [f"{p}: label values 7 outside 0..3"]


@pytest.mark.parametrize(("text", "message"), [
    ("ED 1\nES: 2\nGroup: DCM\n", "malformed line 1"),
    ("ES: 2\nGroup: DCM\n", "no 'ED' field"),
    ("ED: one\nES: 2\nGroup: DCM\n", "ED frame 'one' is not an integer"),
    ("ED: 1\nES: 2\nGroup: XYZ\n", "unknown Group 'XYZ'"),
])
def test_broken_info_cfg_is_named(phantom_copy: Path, text: str, message: str) -> None:
    cfg = phantom_copy / "patient001" / "Info.cfg"
    cfg.write_text(text)
    found = layout.problems(phantom_copy)[0]
    assert len(found) == 1 and found[0].startswith(f"{cfg}: ") and message in found[0]


def test_frame_named_in_info_but_absent_is_named(phantom_copy: Path) -> None:
    cfg = phantom_copy / "patient001" / "Info.cfg"
    cfg.write_text(cfg.read_text().replace("ED: 1", "ED: 3"))
    found = layout.problems(phantom_copy)[0]
    assert any("patient001_frame03.nii.gz: missing (ED frame 3" in f for f in found)


def test_shape_and_affine_mismatch_and_nan_are_named(phantom_copy: Path) -> None:
    data, _, affine = nifti.read(_gt(phantom_copy))
    nifti.write(_gt(phantom_copy), data[:, :-1], affine)
    aff = nifti.read(_img(phantom_copy, "patient006"))[2]
    shifted = aff.copy()
    shifted[0, 3] += 5
    nifti.write(_gt(phantom_copy, "patient006"), nifti.read(_gt(phantom_copy, "patient006"))[0], shifted)
    img, _, aff11 = nifti.read(_img(phantom_copy, "patient011"))
    bad = img.astype(np.float32)
    bad[0, 0, 0] = np.nan
    nifti.write(_img(phantom_copy, "patient011"), bad, aff11)
    found = layout.problems(phantom_copy)[0]
    assert any(f.startswith(f"{_gt(phantom_copy)}: shape") for f in found)
    assert any(f.startswith(f"{_gt(phantom_copy, 'patient006')}: affine differs") for f in found)
    assert any(f.startswith(f"{_img(phantom_copy, 'patient011')}: 1 non-finite voxels") for f in found)


def test_empty_or_missing_folder_is_named(tmp_path: Path) -> None:
    assert layout.problems(tmp_path)[0] == [f"{tmp_path}: empty folder (no patientNNN folders)"]
    with pytest.raises(DataError, match="not a folder"):
        layout.patient_dirs(tmp_path / "nope")


def test_gzip_garbage_is_a_data_error_not_a_traceback(tmp_path: Path) -> None:
    p = tmp_path / "x.nii.gz"
    p.write_bytes(gzip.compress(b"not a nifti"))
    with pytest.raises(DataError, match=r"x.nii.gz: unreadable NIfTI"):
        nifti.read(p)


def _set_pixdim(path: Path, zooms_xyz: tuple[float, float, float]) -> None:
    """Overwrite the voxel size stored in a file's header bytes (pixdim[1:4], little-endian float32 at byte 80),
    as a damaged file would carry it: nibabel itself would not write a 0 or a negative size."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    assert np.frombuffer(bytes(raw[:4]), "<i4")[0] == 348  # a little-endian NIfTI-1 header
    raw[80:92] = np.asarray(zooms_xyz, "<f4").tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))


@pytest.mark.parametrize(("zooms", "message"), [
    ((0.0, 1.5, 10.0), "voxel spacing 0 x 1.5 x 10 mm is not positive and finite"),
    ((-1.5, 1.5, 10.0), "voxel spacing -1.5 x 1.5 x 10 mm is not positive and finite"),
    ((np.nan, 1.5, 10.0), "voxel spacing nan x 1.5 x 10 mm is not positive and finite"),
    ((1e6, 1e6, 10.0), "voxel spacing 1e+06 x 1e+06 x 10 mm is implausible (in-plane 0.1-20 mm, slices 0.5-50 mm)"),
    ((0.05, 1.5, 10.0), "voxel spacing 0.05 x 1.5 x 10 mm is implausible"),
    ((1.5, 1.5, 0.2), "voxel spacing 1.5 x 1.5 x 0.2 mm is implausible"),
    ((1.5, 1.5, 80.0), "voxel spacing 1.5 x 1.5 x 80 mm is implausible"),
])
def test_a_damaged_voxel_size_is_named(phantom_copy: Path, zooms: tuple[float, float, float], message: str) -> None:
    _set_pixdim(_img(phantom_copy), zooms)
    (found,) = layout.problems(phantom_copy)[0]
    assert found.startswith(f"{_img(phantom_copy)}: {message}")


def test_a_constant_image_is_named(phantom_copy: Path) -> None:
    data, _, affine = nifti.read(_img(phantom_copy))
    nifti.write(_img(phantom_copy), np.full_like(data, 7), affine)
    assert layout.problems(phantom_copy)[0] == [f"{_img(phantom_copy)}: constant image (every voxel is 7): it "
                                                "cannot be normalised"]
