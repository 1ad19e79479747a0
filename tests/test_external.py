"""Reading segmentations made elsewhere: names, geometry as nnU-Net writes it, and one line per bad file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from uqbench.api import Case
from uqbench.data import layout, nifti
from uqbench.errors import DataError
from uqbench.scoring import files as external


@pytest.fixture(scope="module")
def case(tiny_phantom: Path) -> Case:
    return next(layout.iter_cases(tiny_phantom))


def _scaled_affine(case: Case) -> np.ndarray:
    """The case's grid as SimpleITK writes it: the voxel size in the sform, not only in pixdim."""
    a = external._directions(case.affine) * np.asarray(case.spacing[::-1])
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = a, case.affine[:3, 3]
    return out


def test_labels_written_by_uqbench_or_as_simpleitk_writes_them_read_back(case: Case, tmp_path: Path) -> None:
    assert case.labels is not None
    ours, theirs = tmp_path / "ours.nii.gz", tmp_path / "theirs.nii.gz"
    nifti.write(ours, case.labels, case.affine, header=case.header)
    nifti.write(theirs, case.labels, _scaled_affine(case))
    for path in (ours, theirs):
        got = external.read_labels(path, external.Geometry.of_case(case))
        assert got.dtype == np.uint8 and np.array_equal(got, case.labels)


def _bad_geometry(change: Callable[[Case, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
                  ) -> Callable[[Case, Path], None]:
    def write(case: Case, path: Path) -> None:
        assert case.labels is not None
        nifti.write(path, *change(case, case.labels, _scaled_affine(case)))
    return write


def _shifted(case: Case, labels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    affine = affine.copy()
    affine[0, 3] += 0.5
    return labels, affine


@pytest.mark.parametrize(("write", "message"), [
    (_bad_geometry(lambda c, lab, a: (lab[:, 1:], a)), "differs from the image's"),
    (_bad_geometry(lambda c, lab, a: (lab, a @ np.diag([1.1, 1, 1, 1]))), "voxel size"),
    (_bad_geometry(lambda c, lab, a: (lab, a @ np.diag([-1, 1, 1, 1]))), "affine (orientation or origin)"),
    (_bad_geometry(_shifted), "affine (orientation or origin)"),
    (_bad_geometry(lambda c, lab, a: (np.where(lab == 3, 7, lab).astype(np.uint8), a)), "label values 7 outside 0..3"),
    (lambda c, p: p.write_bytes(b"not a nifti"), "unreadable NIfTI"),
])
def test_a_bad_label_map_is_one_line_naming_the_file(case: Case, tmp_path: Path,
                                                     write: Callable[[Case, Path], None], message: str) -> None:
    path = tmp_path / "patient001_frame01.nii.gz"
    write(case, path)
    with pytest.raises(DataError, match="^" + str(path).replace(".", r"\.") + ": ") as err:
        external.read_labels(path, external.Geometry.of_case(case))
    assert message in str(err.value) and "\n" not in str(err.value)


def _probs(case: Case) -> np.ndarray:
    assert case.labels is not None
    p = np.full((4, *case.labels.shape), 0.1, np.float32)
    np.put_along_axis(p, case.labels[None].astype(np.int64), 0.7, axis=0)
    return p


def test_probabilities_read_from_nnunet_npz_and_from_4d_nifti(case: Case, tmp_path: Path) -> None:
    probs = _probs(case)
    np.savez_compressed(tmp_path / "a.npz", probabilities=probs)
    nifti.write(tmp_path / "b.nii.gz", probs, case.affine, header=case.header, quantum=1e-3)
    assert np.array_equal(external.read_probabilities(tmp_path / "a.npz", external.Geometry.of_case(case)), probs)
    got = external.read_probabilities(tmp_path / "b.nii.gz", external.Geometry.of_case(case))
    assert np.allclose(got, probs, atol=1e-6)


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p * 1.1, "sum to between"),
    (lambda p: np.where(p > 0.5, np.nan, p), "NaN or infinite probabilities"),
    (lambda p: p[:3], "expected (4,"),
    (lambda p: p.transpose(0, 3, 2, 1), "(classes, z, y, x)"),
])
def test_bad_probabilities_are_one_line_naming_the_file(case: Case, tmp_path: Path,
                                                        change: Callable[[np.ndarray], np.ndarray],
                                                        message: str) -> None:
    path = tmp_path / "patient001_ED.npz"
    np.savez_compressed(path, probabilities=change(_probs(case)))
    with pytest.raises(DataError, match=f"^{path}: ") as err:
        external.read_probabilities(path, external.Geometry.of_case(case))
    assert message in str(err.value)


def test_an_npz_without_probabilities_names_what_it_holds(case: Case, tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "x.npz", softmax=_probs(case))
    with pytest.raises(DataError, match=r"no 'probabilities' array \(holds softmax\)"):
        external.read_probabilities(tmp_path / "x.npz", external.Geometry.of_case(case))


def test_a_3d_nifti_is_not_probabilities(case: Case, tmp_path: Path) -> None:
    assert case.labels is not None
    nifti.write(tmp_path / "x.nii.gz", case.labels, case.affine, header=case.header)
    with pytest.raises(DataError, match="expected a 4-D image with 4 classes last"):
        external.read_probabilities(tmp_path / "x.nii.gz", external.Geometry.of_case(case))


def test_uncertainty_maps_must_lie_in_0_1(case: Case, tmp_path: Path) -> None:
    good = np.linspace(0, 1, case.image.size, dtype=np.float32).reshape(case.image.shape)
    nifti.write(tmp_path / "ok.nii.gz", good, case.affine, header=case.header)
    assert np.allclose(external.read_map(tmp_path / "ok.nii.gz", external.Geometry.of_case(case)), good)
    nifti.write(tmp_path / "bad.nii.gz", good * 2, case.affine, header=case.header)
    with pytest.raises(DataError, match=r"bad\.nii\.gz: uncertainty values from 0 to 2, outside \[0, 1\]"):
        external.read_map(tmp_path / "bad.nii.gz", external.Geometry.of_case(case))


def test_missing_and_extra_cases_are_named(tmp_path: Path) -> None:
    for stem in ("patient001_frame01", "patient001_frame12", "patient002_ED", "patient009_ED", "patient009_ES"):
        (tmp_path / f"{stem}.nii.gz").write_bytes(b"")
    found = external.files(tmp_path, what="label maps")
    assert found[("patient001", "ES")].name == "patient001_frame12.nii.gz"
    with pytest.raises(DataError) as err:
        external.check_complete(found, [("patient001", "ED"), ("patient001", "ES"), ("patient002", "ED"),
                                        ("patient002", "ES")], folder=tmp_path, what="label maps")
    assert str(err.value) == (f"{tmp_path}: label maps: 1 case(s) missing: patient002_ES; 2 file(s) of no case in "
                              "the data: patient009_ED.nii.gz, patient009_ES.nii.gz")


def test_a_file_that_names_no_case_is_named(tmp_path: Path) -> None:
    (tmp_path / "patient001_frame01.nii.gz").write_bytes(b"")
    (tmp_path / "scan7.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"scan7: not a case name"):
        external.files(tmp_path, what="label maps")


def test_nibabel_sees_the_scaled_affine_as_the_voxel_size(case: Case, tmp_path: Path) -> None:
    """The premise of comparing geometry as readers see it: a SimpleITK-style file's sform carries the size."""
    assert case.labels is not None
    nifti.write(tmp_path / "t.nii.gz", case.labels, _scaled_affine(case))
    zooms = nib.load(str(tmp_path / "t.nii.gz")).header.get_zooms()
    assert np.allclose(zooms[::-1], case.spacing)


def test_acdc_unit_sform_and_a_simpleitk_style_file_are_the_same_grid(acdc_root: Path, tmp_path: Path) -> None:
    """Real ACDC files keep the voxel size only in pixdim beside a unit-scale sform; nnU-Net's SimpleITK writer
    puts it in the sform. Both describe one grid, and both are accepted; a real mismatch is still refused."""
    pdir = acdc_root / "patient001"
    real = layout.read_case(pdir, layout.read_info(pdir), "ED")
    assert real.labels is not None and np.allclose(np.abs(np.diag(real.affine))[:3], 1)  # the quirk is there
    nifti.write(tmp_path / "sitk.nii.gz", real.labels, _scaled_affine(real))
    nifti.write(tmp_path / "ours.nii.gz", real.labels, real.affine, header=real.header)
    for name in ("sitk.nii.gz", "ours.nii.gz"):
        assert np.array_equal(external.read_labels(tmp_path / name, external.Geometry.of_case(real)), real.labels)
    nifti.write(tmp_path / "half.nii.gz", real.labels, _scaled_affine(real) @ np.diag([0.5, 0.5, 1, 1]))
    with pytest.raises(DataError, match="voxel size"):
        external.read_labels(tmp_path / "half.nii.gz", external.Geometry.of_case(real))
