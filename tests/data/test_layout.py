"""Reading the ACDC layout (each damaged-file rule of `uqbench data check` is a row of tests/test_cli.py's table)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from uqbench.data import layout, nifti
from uqbench.errors import DataError


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


def test_frame_named_in_info_but_absent_is_named(phantom_copy: Path) -> None:
    cfg = phantom_copy / "patient001" / "Info.cfg"
    cfg.write_text(cfg.read_text().replace("ED: 1", "ED: 3"))
    found = layout.problems(phantom_copy)[0]
    assert any("patient001_frame03.nii.gz: missing (ED frame 3" in f for f in found)


def test_empty_or_missing_folder_is_named(tmp_path: Path) -> None:
    assert layout.problems(tmp_path)[0] == [f"{tmp_path}: empty folder (no patientNNN folders)"]
    with pytest.raises(DataError, match="not a folder"):
        layout.patient_dirs(tmp_path / "nope")


def test_gzip_garbage_is_a_data_error_not_a_traceback(tmp_path: Path) -> None:
    p = tmp_path / "x.nii.gz"
    p.write_bytes(gzip.compress(b"not a nifti"))
    with pytest.raises(DataError, match=r"x.nii.gz: unreadable NIfTI"):
        nifti.read(p)
