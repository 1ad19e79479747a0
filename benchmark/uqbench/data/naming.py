"""Case names outside the ACDC folder layout: ``patientNNN_frameFF`` (the ACDC file stems, which nnU-Net's
ACDC conversion, nnunetv2/dataset_conversion/Dataset027_ACDC.py, keeps as its case identifiers) or
``patientNNN_ED`` / ``patientNNN_ES``.

A frame number does not say the phase; within one patient the lower frame is ED and the higher ES, as a cine
acquisition triggered on the R wave starts at end-diastole (true of all 100 ACDC training patients: ED is frame 1,
or frame 4 for patient090, and always before ES).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from uqbench.api import PHASES

CASE_RE = re.compile(r"^(patient\d{3})_(?:frame(\d{2,3})|(ED|ES))$")


@dataclass(frozen=True, slots=True)
class CaseName:
    """One case named in a file: its stem, patient and phase."""

    stem: str
    patient: str
    phase: str


def phases(stems: Iterable[str], where: str) -> tuple[dict[str, CaseName], list[str]]:
    """(stem -> CaseName for every stem that names a case, one problem line per stem or patient that does not
    resolve): a stem outside the naming, a patient with more than two frames, the same phase twice, or a
    patient with one frame number (its phase is unknown). ``where`` prefixes each problem (a folder)."""
    problems: list[str] = []
    frames: dict[str, list[tuple[int, str]]] = {}
    named: dict[str, CaseName] = {}
    for stem in sorted(stems):
        m = CASE_RE.match(stem)
        if m is None:
            problems.append(f"{where}/{stem}: not a case name (patientNNN_frameFF or patientNNN_ED/_ES)")
        elif m.group(3):
            if any(n.patient == m.group(1) and n.phase == m.group(3) for n in named.values()):
                problems.append(f"{where}/{stem}: {m.group(1)} {m.group(3)} is named twice")
            else:
                named[stem] = CaseName(stem, m.group(1), m.group(3))
        else:
            frames.setdefault(m.group(1), []).append((int(m.group(2)), stem))
    for patient, found in frames.items():
        taken = {n.phase for n in named.values() if n.patient == patient}
        if taken or len(found) != 2 or found[0][0] == found[1][0]:
            listed = ", ".join(stem for _, stem in found)
            beside = f" beside {'/'.join(sorted(taken))}" if taken else ""
            problems.append(f"{where}/{listed}: {patient} needs exactly two frames to tell ED from ES "
                            f"(found {len(found)} frame file(s){beside})")
            continue
        for phase, (_, stem) in zip(PHASES, sorted(found), strict=True):
            named[stem] = CaseName(stem, patient, phase)
    return named, problems
