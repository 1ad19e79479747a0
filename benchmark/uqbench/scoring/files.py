"""Segmentations made elsewhere (nnU-Net above all), read and checked against the cases they segment.

A prediction folder holds one file per case, named ``patientNNN_frameFF`` (nnU-Net's ACDC case ids) or
``patientNNN_ED`` / ``_ES`` (see ``uqbench.data.naming``):

- label maps: NIfTI (``.nii.gz`` or ``.nii``) in the case's original geometry, values 0..3;
- probabilities: nnU-Net's ``--save_probabilities`` output, ``<case>.npz`` with key ``probabilities`` of shape
  [C, Z, Y, X] (nnU-Net's readers give arrays in SimpleITK's z, y, x order, ours too), or a 4-D NIfTI with the
  classes last (as ``uqbench run`` writes them); every voxel's four values sum to 1;
- uncertainty maps: NIfTI in [0, 1].

Geometry is compared as a reader of the files sees it, not as their affines are written: ACDC's files carry
their voxel size only in ``pixdim`` beside a unit-scale sform, while a file written by SimpleITK (nnU-Net) holds
the same grid as a scaled sform. So the shape, the voxel size, the direction of each axis and the origin must
agree, each within ``GEOMETRY_TOL``. Every fault is a DataError naming the file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from uqbench.api import NUM_CLASSES, Case
from uqbench.data import layout, nifti
from uqbench.data.naming import phases
from uqbench.errors import DataError

GEOMETRY_TOL = 1e-3  # mm for sizes and origins; unitless for direction cosines
SUM_TOL = 5e-3  # four probabilities stored in steps of 0.001 (as `uqbench run` writes them) sum to 1 within 2e-3
RANGE_TOL = 1e-6
ENDINGS = (".nii.gz", ".nii")
Key = tuple[str, str]  # (patient, phase)


@dataclass(frozen=True, slots=True, kw_only=True)
class Geometry:
    """A case's original grid, which every file scored against it must share."""

    where: str  # "patientNNN ED"
    shape: tuple[int, ...]  # [Z, Y, X]
    spacing: tuple[float, float, float]  # (z, y, x) mm
    affine: np.ndarray

    @classmethod
    def of_case(cls, case: Case) -> Geometry:
        return cls(where=f"{case.patient} {case.phase}", shape=case.image.shape, spacing=case.spacing,
                   affine=case.affine)


def files(folder: Path, *, what: str, endings: Iterable[str] = ENDINGS) -> dict[Key, Path]:
    """(patient, phase) -> file for every case file in ``folder``; DataError for a missing folder, a file name
    that names no case, or a case named twice."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder ({what})")
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        ending = next((e for e in endings if f.name.endswith(e)), None)
        if ending is not None and f.is_file():
            stem = f.name[: -len(ending)]
            if stem in found:
                raise DataError(f"{f}: {stem} is given twice ({found[stem].name})")
            found[stem] = f
    if not found:
        raise DataError(f"{folder}: no {what} ({' or '.join(endings)} files)")
    named, problems = phases(found, str(folder))
    if problems:
        raise DataError(problems[0])
    return {(n.patient, n.phase): found[stem] for stem, n in named.items()}


def check_complete(found: dict[Key, Path], expected: Iterable[Key], *, folder: Path, what: str,
                   known: Iterable[Key] = ()) -> None:
    """DataError naming the missing cases and the extra files when ``found`` is not exactly ``expected``; files
    of ``known`` cases that are not expected (other folds than those asked for) are left alone."""
    want = set(expected)
    missing = sorted(want - set(found))
    extra = sorted(found[k].name for k in set(found) - want - set(known))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} case(s) missing: " + _listed([f"{p}_{ph}" for p, ph in missing]))
        if extra:
            parts.append(f"{len(extra)} file(s) of no case in the data: " + _listed(extra))
        raise DataError(f"{folder}: {what}: " + "; ".join(parts))


def _listed(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def check_geometry(path: Path, *, shape: tuple[int, ...], spacing: tuple[float, float, float], affine: np.ndarray,
                   case: Geometry) -> None:
    """DataError naming ``path`` unless its grid is the case's: shape, voxel size, axis directions and origin."""
    if tuple(shape) != tuple(case.shape):
        raise DataError(f"{path}: shape {tuple(shape)[::-1]} differs from the image's {tuple(case.shape)[::-1]} "
                        f"({case.where}; x, y, z)")
    if not np.allclose(spacing, case.spacing, rtol=0, atol=GEOMETRY_TOL):
        raise DataError(f"{path}: voxel size {_mm(spacing)} differs from the image's {_mm(case.spacing)}")
    ours, theirs = _directions(affine), _directions(case.affine)
    if not np.allclose(ours, theirs, atol=GEOMETRY_TOL) or not np.allclose(affine[:3, 3], case.affine[:3, 3],
                                                                             atol=GEOMETRY_TOL):
        raise DataError(f"{path}: affine (orientation or origin) differs from the image's")


def _directions(affine: np.ndarray) -> np.ndarray:
    """The unit direction of each voxel axis (the affine's columns, normalised)."""
    m = np.asarray(affine, np.float64)[:3, :3]
    return m / np.linalg.norm(m, axis=0, keepdims=True)


def _mm(spacing: Iterable[float]) -> str:
    return " x ".join(f"{s:g}" for s in list(spacing)[::-1]) + " mm"


def read_labels(path: Path, case: Geometry) -> np.ndarray:
    """A label map in the case's geometry, uint8 [Z, Y, X] with values 0..3."""
    data, spacing, affine = nifti.read(path)
    check_geometry(path, shape=data.shape, spacing=spacing, affine=affine, case=case)
    return layout.label_values(data, path)


def read_map(path: Path, case: Geometry) -> np.ndarray:
    """An uncertainty map in the case's geometry, float32 [Z, Y, X] in [0, 1]."""
    data, spacing, affine = nifti.read(path)
    check_geometry(path, shape=data.shape, spacing=spacing, affine=affine, case=case)
    values = np.asarray(data, np.float32)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: {int((~np.isfinite(values)).sum())} non-finite values in an uncertainty map")
    if values.size and (values.min() < -RANGE_TOL or values.max() > 1 + RANGE_TOL):
        raise DataError(f"{path}: uncertainty values from {values.min():g} to {values.max():g}, outside [0, 1]")
    return np.clip(values, 0, 1)


def read_probabilities(path: Path, case: Geometry) -> np.ndarray:
    """Class probabilities in the case's geometry, float32 [C, Z, Y, X], each voxel's summing to 1: from
    nnU-Net's ``.npz`` (key ``probabilities``, [C, Z, Y, X]) or a 4-D NIfTI (classes last)."""
    if path.name.endswith(".npz"):
        try:
            with np.load(path) as z:
                if "probabilities" not in z.files:
                    raise DataError(f"{path}: no 'probabilities' array (holds {', '.join(z.files) or 'nothing'})")
                probs = np.asarray(z["probabilities"], np.float32)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{path}: unreadable npz ({type(exc).__name__})") from exc
        expect = (NUM_CLASSES, *case.shape)
        if probs.shape != expect:
            raise DataError(f"{path}: probabilities of shape {probs.shape}, expected {expect} (classes, z, y, x)")
    else:
        probs = _nifti4d(path, case)
    if not np.isfinite(probs).all():
        raise DataError(f"{path}: {int((~np.isfinite(probs)).sum())} NaN or infinite probabilities")
    if probs.size and (probs.min() < -RANGE_TOL or probs.max() > 1 + RANGE_TOL):
        raise DataError(f"{path}: probabilities from {probs.min():g} to {probs.max():g}, outside [0, 1]")
    sums = probs.sum(0)
    worst = float(np.abs(sums - 1).max()) if sums.size else 0.0
    if worst > SUM_TOL:
        raise DataError(f"{path}: class probabilities sum to between {sums.min():g} and {sums.max():g}, not 1")
    return probs


def _nifti4d(path: Path, case: Geometry) -> np.ndarray:
    try:
        img: Any = nib.load(str(path))  # a Nifti1Image, typed as the generic base
        data = np.asarray(img.dataobj, np.float32)
    except Exception as exc:  # nibabel, gzip and zlib raise many types for damaged files
        raise DataError(f"{path}: unreadable NIfTI ({type(exc).__name__})") from exc
    if data.ndim != 4 or data.shape[3] != NUM_CLASSES:
        raise DataError(f"{path}: shape {data.shape}, expected a 4-D image with {NUM_CLASSES} classes last")
    spacing, affine = nifti.read_geometry(path)
    check_geometry(path, shape=data.shape[:3][::-1], spacing=spacing, affine=affine, case=case)
    return np.ascontiguousarray(data.transpose(3, 2, 1, 0))
