"""The official ACDC folder layout: reading and validating it.

    ROOT/patientNNN/Info.cfg                       ED, ES, Group, Height, Weight, NbFrame
    ROOT/patientNNN/patientNNN_frameYY.nii.gz      image at frame YY (x, y, z)
    ROOT/patientNNN/patientNNN_frameYY_gt.nii.gz   labels: 0 background, 1 RV, 2 myocardium, 3 LV

``problems()`` lists every fault, one line each starting with the file; ``read_case()`` raises the
same message as a ``DataError`` for the first fault of one case, so every command that reads data
fails the same way `uqbench data check` reports.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uqbench.api import GROUPS, PHASES, Case
from uqbench.data import nifti
from uqbench.errors import DataError

PATIENT_RE = re.compile(r"^patient\d{3}$")
AFFINE_TOL = 1e-3  # mm: image and gt affines must agree to this
IN_PLANE_MM = (0.1, 20.0)  # a voxel size outside these is a damaged header, not a cardiac MR image
THROUGH_PLANE_MM = (0.5, 50.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientInfo:
    """The fields of one Info.cfg that uqbench uses."""

    patient: str
    group: str
    frames: dict[str, int]  # phase -> frame number
    height: float | None
    weight: float | None


def patient_dirs(root: Path) -> list[Path]:
    """The patientNNN folders under ``root``, sorted; a missing or empty root is a DataError."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and PATIENT_RE.match(p.name))
    if not dirs:
        raise DataError(f"{root}: empty folder (no patientNNN folders)")
    return dirs


def patient_dirs_or_empty(root: Path) -> list[Path]:
    """The patientNNN folders under ``root``, or none when it has none."""
    try:
        return patient_dirs(root)
    except DataError:
        return []


def read_info(pdir: Path) -> PatientInfo:
    """Parse ``pdir/Info.cfg``; a missing, malformed or incomplete file is a DataError."""
    path = pdir / "Info.cfg"
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc
    fields: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise DataError(f"{path}: malformed line {n}: {line.strip()[:40]!r} (expected 'Key: value')")
        fields[key.strip()] = value.strip()
    for key in ("ED", "ES", "Group"):
        if key not in fields:
            raise DataError(f"{path}: malformed Info.cfg: no '{key}' field")
    frames: dict[str, int] = {}
    for phase in PHASES:
        try:
            frames[phase] = int(fields[phase])
        except ValueError as exc:
            raise DataError(f"{path}: malformed Info.cfg: {phase} frame {fields[phase]!r} is not an integer") from exc
    if fields["Group"] not in GROUPS:
        raise DataError(f"{path}: malformed Info.cfg: unknown Group {fields['Group']!r} (known: {', '.join(GROUPS)})")
    return PatientInfo(patient=pdir.name, group=fields["Group"], frames=frames,
                       height=_number(fields.get("Height"), path, "Height"),
                       weight=_number(fields.get("Weight"), path, "Weight"))


def _number(raw: str | None, path: Path, key: str) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise DataError(f"{path}: malformed Info.cfg: {key} {raw!r} is not a number") from exc


def frame_paths(pdir: Path, frame: int) -> tuple[Path, Path]:
    stem = f"{pdir.name}_frame{frame:02d}"
    return pdir / f"{stem}.nii.gz", pdir / f"{stem}_gt.nii.gz"


def read_case(pdir: Path, info: PatientInfo, phase: str) -> Case:
    """Read and validate one phase of one patient."""
    img_path, gt_path = frame_paths(pdir, info.frames[phase])
    for p in (img_path, gt_path):
        if not p.is_file():
            raise DataError(f"{p}: missing ({phase} frame {info.frames[phase]} named in Info.cfg)")
    return read_pair(img_path, gt_path, patient=info.patient, phase=phase, group=info.group, height=info.height,
                     weight=info.weight)


def read_pair(img_path: Path, gt_path: Path, *, patient: str, phase: str, group: str, height: float | None = None,
              weight: float | None = None) -> Case:
    """One case from an image and its label map, whatever the layout that names them: a plausible voxel size,
    finite and non-constant intensities, labels of the image's shape and affine with values in 0..3."""
    image, spacing, affine, header = nifti.read_with_header(img_path)
    z, y, x = spacing
    if not (IN_PLANE_MM[0] <= min(y, x) and max(y, x) <= IN_PLANE_MM[1]
            and THROUGH_PLANE_MM[0] <= z <= THROUGH_PLANE_MM[1]):
        raise DataError(f"{img_path}: voxel spacing {x:g} x {y:g} x {z:g} mm is implausible (in-plane "
                        f"{IN_PLANE_MM[0]:g}-{IN_PLANE_MM[1]:g} mm, slices {THROUGH_PLANE_MM[0]:g}-"
                        f"{THROUGH_PLANE_MM[1]:g} mm)")
    labels_raw, _, gt_affine = nifti.read(gt_path)
    if labels_raw.shape != image.shape:
        raise DataError(f"{gt_path}: shape {labels_raw.shape[::-1]} differs from the image's {image.shape[::-1]}")
    if not np.allclose(affine, gt_affine, atol=AFFINE_TOL):
        raise DataError(f"{gt_path}: affine differs from the image's")
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise DataError(f"{img_path}: {int((~np.isfinite(image)).sum())} non-finite voxels")
    if image.size and image.min() == image.max():
        raise DataError(f"{img_path}: constant image (every voxel is {image.flat[0]:g}): it cannot be normalised")
    return Case(patient=patient, phase=phase, group=group, image=image, labels=label_values(labels_raw, gt_path),
                spacing=spacing, affine=affine, height=height, weight=weight, header=header)


def label_values(raw: np.ndarray, path: Path) -> np.ndarray:
    """``raw`` as uint8 labels; DataError naming ``path`` for non-integer values or values outside 0..3."""
    if np.issubdtype(raw.dtype, np.floating) and (not np.isfinite(raw).all() or not np.all(raw == np.round(raw))):
        raise DataError(f"{path}: non-integer or non-finite label values")
    bad = np.setdiff1d(np.unique(raw), [0, 1, 2, 3])
    if bad.size:
        raise DataError(f"{path}: label values {', '.join(str(int(v)) for v in bad[:5])} outside 0..3")
    return raw.astype(np.uint8)


def iter_cases(root: Path) -> Iterator[Case]:
    """Every case under ``root``, patient by patient, ED then ES; raises on the first fault."""
    for pdir in patient_dirs(root):
        info = read_info(pdir)
        for phase in PHASES:
            yield read_case(pdir, info, phase)


def problems(root: Path) -> tuple[list[str], int, int]:
    """(every fault as one line naming its file, patients read, volumes read cleanly)."""
    try:
        dirs = patient_dirs(root)
    except DataError as exc:
        return [str(exc)], 0, 0
    found: list[str] = []
    volumes = 0
    for pdir in dirs:
        try:
            info = read_info(pdir)
        except DataError as exc:
            found.append(str(exc))
            continue
        for phase in PHASES:
            try:
                read_case(pdir, info, phase)
                volumes += 1
            except DataError as exc:
                found.append(str(exc))
    return found, len(dirs), volumes


def fingerprint(root: Path) -> str:
    """sha256 over the names and bytes of every Info.cfg and NIfTI file under ``root``."""
    h = hashlib.sha256()
    for pdir in patient_dirs(root):
        for f in sorted(pdir.iterdir()):
            if f.name == "Info.cfg" or f.name.endswith(".nii.gz"):
                h.update(f"{pdir.name}/{f.name}\0".encode())
                h.update(f.read_bytes())
    return h.hexdigest()
