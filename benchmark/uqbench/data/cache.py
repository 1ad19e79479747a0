"""The prepared dataset: preprocessed once, stored compactly, reused while source and parameters match.

Layout: ``ROOT/prepared/<key>/manifest.json`` plus one ``<patient>_<phase>.xz`` per case, where
``key`` hashes the dataset's content fingerprint and the preprocessing parameters. A case file is
lzma-compressed and holds the normalised image on its original grid, quantised to ``LEVELS`` grey
levels and coded as 2-D differences (so lzma sees mostly small residuals), then the reference labels
on the original grid. Resampling to 1.4 mm happens on load (a few ms per volume), so the folder is
self-contained: it carries the original geometry needed to score in original space. The 100 ACDC
training patients take 37.5 MiB (8-bit storage would take about 54 MiB, more than a GPU run can carry).

Since format 4 each case also has ``<patient>_<phase>.grid.xz``: its reference labels on the 1.4 mm grid,
resampled once when the case is prepared (resampling them on every load was most of a command's time). The image
is resampled when first used (scoring without a detector never uses it), and a command loads only the cases it
scores. A case's fingerprint covers what it did in format 3 (the grid file is derived from it), so stage keys do
not change with the format.

Quantisation to 64 levels (step 1/63, error sd 0.0046 in [0, 1] units) is part of the preprocessing
definition, applied for every run alike: see PreprocessParams.levels.
"""

from __future__ import annotations

import base64
import hashlib
import json
import lzma
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.api import Case, Dataset
from uqbench.data import preprocess as pp
from uqbench.files import write_atomic
from uqbench.store import sha256

FORMAT = 4  # part of the folder key: 2 added each case's source NIfTI header, 3 each case file's sha256, 4 grid labels
IDENTITY = ("patient", "phase", "group", "shape", "sha256", "spacing", "affine", "height", "weight", "header")
"""The manifest fields a case's fingerprint hashes (with the preprocessing parameters): those of format 3."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """One case on both grids: the 1.4 mm network grid and the original scoring grid."""

    patient: str
    phase: str
    group: str
    labels: np.ndarray  # uint8 [Z, Y', X'], 1.4 mm grid
    original_labels: np.ndarray  # uint8 [Z, Y, X], original grid (never altered)
    spacing: tuple[float, float, float]  # original (z, y, x) mm
    affine: np.ndarray
    height: float | None
    weight: float | None
    header: bytes | None  # the source NIfTI header, for outputs in the same geometry
    fingerprint: str  # sha256 of the case's prepared content, geometry and preprocessing: what stage keys use
    original_image: np.ndarray  # float32 [Z, Y, X] in [0, 1], the normalised, quantised image on its own grid
    target: float = 1.4  # the network grid's in-plane spacing (mm)
    _image: list[np.ndarray] = field(default_factory=list, repr=False, compare=False)  # the grid image, once made

    @property
    def image(self) -> np.ndarray:
        """float32 [Z, Y', X'] in [0, 1] on the 1.4 mm grid, resampled on first use."""
        if not self._image:
            self._image.append(pp.resample_image(self.original_image, self.spacing, self.target))
        return self._image[0]


def cache_root() -> Path:
    """``$UQBENCH_CACHE`` or ``~/.cache/uqbench``."""
    return Path(os.environ.get("UQBENCH_CACHE", Path.home() / ".cache" / "uqbench")).expanduser()


def _encode(q: np.ndarray) -> bytes:
    d = np.diff(q, axis=2, prepend=np.uint8(0))
    return np.diff(d, axis=1, prepend=np.uint8(0)).tobytes()  # uint8 arithmetic wraps: exactly invertible


def _decode(raw: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    r = np.frombuffer(raw, np.uint8).reshape(shape)
    return np.cumsum(np.cumsum(r, axis=1, dtype=np.uint8), axis=2, dtype=np.uint8)


def _write_case(path: Path, case: Case, params: pp.PreprocessParams) -> dict[str, Any]:
    norm = pp.normalise(case.image, params.low_percentile, params.high_percentile)
    q = np.round(norm * (params.levels - 1)).astype(np.uint8)
    assert case.labels is not None
    blob = lzma.compress(_encode(q) + case.labels.tobytes(), preset=6)
    write_atomic(path, lambda tmp: tmp.write_bytes(blob))
    grid = pp.resample_labels(case.labels, case.spacing, params.spacing)
    grid_blob = lzma.compress(grid.tobytes(), preset=6)
    grid_path = path.with_name(path.name.removesuffix(".xz") + ".grid.xz")
    write_atomic(grid_path, lambda tmp: tmp.write_bytes(grid_blob))
    return {"patient": case.patient, "phase": case.phase, "group": case.group, "shape": list(case.image.shape),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "spacing": list(case.spacing), "affine": case.affine.tolist(), "height": case.height,
            "weight": case.weight, "file": path.name,
            "header": None if case.header is None else base64.b64encode(case.header).decode(),
            "grid_file": grid_path.name, "grid_shape": list(grid.shape),
            "grid_sha256": hashlib.sha256(grid_blob).hexdigest()}


def _read_case(folder: Path, meta: dict[str, Any], params: pp.PreprocessParams) -> Prepared:
    nz, ny, nx = (int(v) for v in meta["shape"])
    raw = lzma.decompress((folder / meta["file"]).read_bytes())
    n = nz * ny * nx
    image = _decode(raw[:n], (nz, ny, nx)).astype(np.float32) / (params.levels - 1)
    labels = np.frombuffer(raw[n:], np.uint8).reshape(nz, ny, nx).copy()
    grid = np.frombuffer(lzma.decompress((folder / meta["grid_file"]).read_bytes()), np.uint8)
    identity = {k: meta[k] for k in IDENTITY} | {"params": params.fingerprint()}
    sz, sy, sx = (float(s) for s in meta["spacing"])
    spacing = (sz, sy, sx)
    return Prepared(patient=meta["patient"], phase=meta["phase"], group=meta["group"], original_image=image,
                    target=params.spacing, labels=grid.reshape([int(v) for v in meta["grid_shape"]]).copy(),
                    original_labels=labels,
                    spacing=spacing, affine=np.asarray(meta["affine"]), height=meta["height"], weight=meta["weight"],
                    header=None if meta["header"] is None else base64.b64decode(meta["header"]),
                    fingerprint=hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest())


def _verify(folder: Path) -> tuple[str, list[dict[str, Any]]]:
    """('', entries) when the manifest reads and every case file matches its sha256, else (the problem, [])."""
    try:
        entries = json.loads((folder / "manifest.json").read_text())["cases"]
        for meta in entries:
            for file, digest in ((meta["file"], meta["sha256"]), (meta["grid_file"], meta["grid_sha256"])):
                if sha256(folder / file) != digest:
                    return f"{file} does not match its sha256", []
    except FileNotFoundError as exc:
        return f"{Path(exc.filename or '?').name} is missing", []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({type(exc).__name__})", []
    return "", entries


def _folder(fingerprint: str, params: pp.PreprocessParams, root: Path | None) -> Path:
    return (root or cache_root()) / "prepared" / f"{fingerprint[:16]}-{params.fingerprint()}-f{FORMAT}"


def is_prepared(fingerprint: str, params: pp.PreprocessParams, root: Path | None = None) -> bool:
    """Whether data of content ``fingerprint`` were prepared with ``params`` (which they only are once their reader
    found no problem in them)."""
    return (_folder(fingerprint, params, root) / "manifest.json").is_file()


def prepare(dataset: Dataset, *, params: pp.PreprocessParams, fingerprint: str, root: Path | None = None,
            advance: Callable[[int], None] | None = None, notes: list[str] | None = None
            ) -> tuple[Path, list[dict[str, Any]]]:
    """The prepared folder for ``dataset`` with content ``fingerprint`` (created on first use) and its
    manifest entries. A folder whose manifest or case files are damaged (checked against their sha256 on
    every use) is prepared again, and ``notes`` is told."""
    folder = _folder(fingerprint, params, root)
    key = folder.name
    manifest = folder / "manifest.json"
    if manifest.is_file():
        problem, entries = _verify(folder)
        if not problem:
            return folder, entries
        if notes is not None:
            notes.append(f"prepared data {folder}: {problem}; prepared again")
        shutil.rmtree(folder, ignore_errors=True)
    # Each preparing process writes its own folder and renames it into place in one step, so two runs
    # preparing the same data at once never mix files: the first rename wins, the other's copy is dropped.
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=key + ".", suffix=".part", dir=folder.parent))
    try:
        entries = []
        for case in dataset.cases():
            entries.append(_write_case(work / f"{case.patient}_{case.phase}.xz", case, params))
            if advance:
                advance(1)
        (work / "manifest.json").write_text(json.dumps({"format": FORMAT, "params": asdict(params),
                                                        "cases": entries}, indent=1))
        if folder.is_dir() and not manifest.is_file():
            shutil.rmtree(folder)  # an incomplete folder left by an older version
        try:
            work.rename(folder)
        except OSError:
            if not manifest.is_file():
                raise
            return folder, json.loads(manifest.read_text())["cases"]  # another process finished first
        return folder, entries
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load(folder: Path, entries: list[dict[str, Any]], *, params: pp.PreprocessParams,
         advance: Callable[[int], None] | None = None, patients: Callable[[str], bool] = lambda p: True
         ) -> list[Prepared]:
    """The prepared cases of ``folder`` on both grids, of the patients ``patients`` keeps (default: every one)."""
    out = []
    for meta in (m for m in entries if patients(m["patient"])):
        out.append(_read_case(folder, meta, params))
        if advance:
            advance(1)
    return out
