"""Dataset readers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from uqbench import Case, Dataset, Register, hookimpl
from uqbench.plugin import DataError, acdc_cases, acdc_fingerprint, acdc_folds, acdc_patient_dirs, acdc_problems


class ACDC:
    """ACDC official layout (patientNNN/Info.cfg + frame NIfTIs); folds from the committed table."""

    name = "acdc"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def problems(self) -> list[str]:
        found, _, _ = acdc_problems(self.root)
        table = acdc_folds()
        try:
            dirs = acdc_patient_dirs(self.root)
        except DataError:
            return found  # a missing or empty folder, already among the problems
        return found + [f"{p}: not an ACDC training patient id (no fold in the committed split)"
                        for p in dirs if p.name not in table]

    def cases(self) -> Iterator[Case]:
        self.folds()
        return acdc_cases(self.root)

    def folds(self) -> Mapping[str, int]:
        table = acdc_folds()
        out = {}
        for pdir in acdc_patient_dirs(self.root):
            if pdir.name not in table:
                raise DataError(f"{pdir}: not an ACDC training patient id (no fold in the committed split)")
            out[pdir.name] = table[pdir.name]
        return out

    def fingerprint(self) -> str:
        return acdc_fingerprint(self.root)


@hookimpl
def register_datasets(register: Register[Dataset]) -> None:
    register(ACDC)
