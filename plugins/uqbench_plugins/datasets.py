"""Dataset readers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from uqbench import Case, hookimpl
from uqbench.data import layout
from uqbench.data.folds import acdc_folds
from uqbench.errors import DataError


class ACDC:
    """ACDC official layout (patientNNN/Info.cfg + frame NIfTIs); folds from the committed table."""

    name = "acdc"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def problems(self) -> list[str]:
        found, _, _ = layout.problems(self.root)
        table = acdc_folds()
        if self.root.is_dir():
            found += [f"{p}: not an ACDC training patient id (no fold in the committed split)"
                      for p in layout.patient_dirs_or_empty(self.root) if p.name not in table]
        return found

    def cases(self) -> Iterator[Case]:
        self.folds()
        return layout.iter_cases(self.root)

    def folds(self) -> Mapping[str, int]:
        table = acdc_folds()
        out = {}
        for pdir in layout.patient_dirs(self.root):
            if pdir.name not in table:
                raise DataError(f"{pdir}: not an ACDC training patient id (no fold in the committed split)")
            out[pdir.name] = table[pdir.name]
        return out

    def fingerprint(self) -> str:
        return layout.fingerprint(self.root)


@hookimpl
def register_datasets(register) -> None:  # type: ignore[no-untyped-def]
    register(ACDC)
