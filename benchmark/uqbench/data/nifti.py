"""Read and write NIfTI volumes as [Z, Y, X] arrays, keeping spacing and affine; every failure names the file.

Outputs are written with their source's header when it is known: ACDC's files carry their voxel size only in
``pixdim`` (qform_code 0) beside a unit-scale sform, so a header rebuilt from the affine would say 1 x 1 x 1 mm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from uqbench.errors import DataError
from uqbench.files import write_atomic


def read(path: Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Return (data [Z, Y, X] in the file's dtype, spacing (z, y, x) in mm, affine [4, 4])."""
    data, spacing, affine, _ = read_with_header(path)
    return data, spacing, affine


def read_with_header(path: Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, bytes]:
    """As :func:`read`, and the file's 348-byte header as stored (what :func:`write` needs to give an output
    the same geometry)."""
    try:
        img: Any = nib.load(str(path))  # a Nifti1Image; nibabel's stubs type it as the generic base
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing") from exc
    except Exception as exc:  # nibabel, gzip and zlib raise many types for damaged files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: unreadable NIfTI ({type(exc).__name__}: {reason})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, found shape {data.shape}")
    stored = _stored_header(path)
    zooms = np.asarray(stored["pixdim"][1:4], dtype=np.float64)  # nibabel's checked load turns a 0 into 1 mm
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise DataError(f"{path}: voxel spacing {_mm(spacing)} is not positive and finite")
    affine = np.asarray(img.affine, dtype=np.float64)
    return np.ascontiguousarray(data.transpose(2, 1, 0)), spacing, affine, bytes(stored.binaryblock)


def read_geometry(path: Path) -> tuple[tuple[float, float, float], np.ndarray]:
    """(spacing (z, y, x) in mm from the stored pixdim, affine) of any NIfTI file, 3-D or not, without its data."""
    try:
        img: Any = nib.load(str(path))  # a Nifti1Image, typed as the generic base
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = np.asarray(_stored_header(path)["pixdim"][1:4], dtype=np.float64)
    except Exception as exc:  # as read_with_header
        raise DataError(f"{path}: unreadable NIfTI ({type(exc).__name__})") from exc
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise DataError(f"{path}: voxel spacing {_mm(spacing)} is not positive and finite")
    return spacing, affine


def _stored_header(path: Path) -> Any:
    """The header as the file stores it, unchecked: nibabel's checked load would change it without a word."""
    with ImageOpener(str(path)) as f:
        return nib.Nifti1Header.from_fileobj(f, check=False)


def _mm(spacing: tuple[float, float, float]) -> str:
    """'x x y x z mm' of a (z, y, x) spacing, in the file's axis order."""
    return " x ".join(f"{s:g}" for s in spacing[::-1]) + " mm"


def write(path: Path, data: np.ndarray, affine: np.ndarray, *, header: bytes | None = None,
          quantum: float | None = None) -> None:
    """Write [Z, Y, X] (or [C, Z, Y, X], stored as a 4-D image with C last) ``data``. With the source's
    ``header`` (:func:`read_with_header`) the output keeps its zooms, qform and sform; without, voxel sizes are
    taken from ``affine``. With ``quantum``, floats are stored as int16 multiples of it with the NIfTI scale
    factor set to it, which readers apply on load: NIfTI has no float16, and rounding to, say, 1e-3 (float16's
    step near 1) lets gzip shrink probability maps about threefold."""
    arr = data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)
    if quantum is not None:
        steps = np.round(arr / quantum)
        if steps.size and np.abs(steps).max() > np.iinfo(np.int16).max:
            raise ValueError(f"{path}: values too large for int16 steps of {quantum}")
        arr = steps.astype(np.int16)
    if header is None:
        img = nib.Nifti1Image(np.ascontiguousarray(arr), affine)
    else:  # no affine given: nibabel then keeps the header's qform, sform and pixdim as they are
        img = nib.Nifti1Image(np.ascontiguousarray(arr), None, header=nib.Nifti1Header(binaryblock=header))
        img.set_data_dtype(arr.dtype)  # not the source's
    img.header.set_slope_inter(np.nan, np.nan)  # the source's scaling does not apply to these values
    if quantum is not None:
        img.header.set_slope_inter(quantum, 0.0)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: nib.save(img, str(tmp)), part=".part.nii.gz")
