"""The committed 4-fold pathology-stratified ACDC split (folds.json), identical for every run and plugin."""

from __future__ import annotations

import functools
import json
from importlib import resources

NUM_FOLDS = 4


@functools.cache
def _table() -> dict:
    return json.loads(resources.files("uqbench.data").joinpath("folds.json").read_text())


def acdc_folds() -> dict[str, int]:
    """patient id -> fold index (0..3) for the 100 ACDC training patients."""
    return dict(_table()["folds"])


def acdc_groups() -> dict[str, str]:
    """patient id -> pathology group, as the ACDC ID blocks define it."""
    return dict(_table()["groups"])


def parse_folds(spec: str) -> list[int]:
    """'0,1,2,3' -> [0, 1, 2, 3]; raises ValueError naming the bad item."""
    out: list[int] = []
    for item in spec.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) >= NUM_FOLDS:
            raise ValueError(f"fold {item!r} is not one of 0..{NUM_FOLDS - 1}")
        if int(item) in out:
            raise ValueError(f"fold {item!r} is given twice")
        out.append(int(item))
    return sorted(out)
