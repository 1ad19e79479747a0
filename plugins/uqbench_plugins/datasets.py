"""Dataset readers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from uqbench import Case, Dataset, Register, hookimpl
from uqbench.plugin import (
    PHASES,
    DataError,
    acdc_cases,
    acdc_fingerprint,
    acdc_folds,
    acdc_groups,
    acdc_patient_dirs,
    acdc_problems,
    case_names,
    read_case_files,
)


class ACDC:
    """ACDC official layout (patientNNN/Info.cfg + frame NIfTIs); folds from the committed table. Any patientNNN
    is read: the held-out test patients (101-150) have no fold, which only cross-validation needs."""

    name = "acdc"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def problems(self) -> list[str]:
        return acdc_problems(self.root)[0]

    def cases(self) -> Iterator[Case]:
        return acdc_cases(self.root)

    def folds(self) -> Mapping[str, int]:
        table = acdc_folds()
        return {pdir.name: table[pdir.name] for pdir in acdc_patient_dirs(self.root) if pdir.name in table}

    def fingerprint(self) -> str:
        return acdc_fingerprint(self.root)


class NNUNet:
    """nnU-Net's raw layout (DatasetNNN_Name/dataset.json, imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz)
    with ACDC's cases, named as nnU-Net's ACDC conversion names them (patientNNN_frameFF; or patientNNN_ED/_ES);
    labels 0 background, 1 RV, 2 myocardium, 3 LV as ACDC's; folds and groups from the committed table by patient
    id (a patient outside it, such as a held-out test patient, has neither)."""

    name = "nnunet"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _index(self) -> tuple[list[tuple[Path, Path, str, str]], list[str]]:
        """((image, labels, patient, phase) per case, sorted by patient then phase; every layout problem)."""
        spec = self.root / "dataset.json"
        try:
            meta: Any = json.loads(spec.read_text())
        except FileNotFoundError:
            return [], [f"{spec}: missing (not an nnU-Net raw dataset folder)"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return [], [f"{spec}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"]
        if not isinstance(meta, dict):
            return [], [f"{spec}: not a JSON object"]
        problems = []
        ending = meta.get("file_ending", ".nii.gz")
        if ending not in (".nii.gz", ".nii"):
            return [], [f"{spec}: file_ending {ending!r}: uqbench reads NIfTI (.nii.gz or .nii)"]
        channels = meta.get("channel_names")
        if not isinstance(channels, dict) or len(channels) != 1:
            problems.append(f"{spec}: channel_names must name one input channel (ACDC's cine MRI)")
        labels = meta.get("labels")
        if not isinstance(labels, dict) or sorted(v for v in labels.values() if isinstance(v, int)) != [0, 1, 2, 3] \
                or len(labels) != 4:
            problems.append(f"{spec}: labels must map four names to 0..3 (background, RV, myocardium, LV)")
        images, label_dir = self.root / "imagesTr", self.root / "labelsTr"
        for folder in (images, label_dir):
            if not folder.is_dir():
                problems.append(f"{folder}: missing")
        if problems:
            return [], problems
        stems = [f.name[: -len(ending)] for f in label_dir.iterdir() if f.name.endswith(ending)]
        named, problems = case_names(stems, str(label_dir))
        image_stems = {f.name[: -len(ending)] for f in images.iterdir() if f.name.endswith(ending)}
        for stem in sorted(image_stems - {f"{s}_0000" for s in stems}):
            problems.append(f"{images / (stem + ending)}: no labels in {label_dir} (a case has one channel, _0000)")
        found = []
        for stem, n in named.items():
            image = images / f"{stem}_0000{ending}"
            if not image.is_file():
                problems.append(f"{image}: missing (the image of {label_dir / (stem + ending)})")
            found.append((image, label_dir / f"{stem}{ending}", n.patient, n.phase))
        return sorted(found, key=lambda f: (f[2], PHASES.index(f[3]))), problems

    def problems(self) -> list[str]:
        index, found = self._index()
        for image, labels, patient, phase in index:
            try:
                self._read(image, labels, patient=patient, phase=phase)
            except DataError as exc:
                found.append(str(exc))
        return found

    def _read(self, image: Path, labels: Path, *, patient: str, phase: str) -> Case:
        return read_case_files(image, labels, patient=patient, phase=phase, group=acdc_groups().get(patient, ""))

    def cases(self) -> Iterator[Case]:
        index, problems = self._index()
        if problems:
            raise DataError(problems[0])
        return (self._read(image, labels, patient=patient, phase=phase) for image, labels, patient, phase in index)

    def folds(self) -> Mapping[str, int]:
        index, problems = self._index()
        if problems:
            raise DataError(problems[0])
        table = acdc_folds()
        return {patient: table[patient] for _, _, patient, _ in index if patient in table}

    def fingerprint(self) -> str:
        index, _ = self._index()
        h = hashlib.sha256((self.root / "dataset.json").read_bytes())
        for image, labels, *_ in index:
            for f in (image, labels):
                h.update(f"{f.parent.name}/{f.name}\0".encode())
                h.update(f.read_bytes())
        return h.hexdigest()


@hookimpl
def register_datasets(register: Register[Dataset]) -> None:
    register(ACDC)
    register(NNUNet)
