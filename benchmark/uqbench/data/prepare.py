"""A dataset checked and prepared, in one place, for every command that reads one: the run's --data and
--test-data, and ``uqbench evaluate``'s reference. Refusals come before anything is written, so a refused command
leaves nothing behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uqbench.data import cache, phantom
from uqbench.data.preprocess import PreprocessParams
from uqbench.errors import DataError, UqbenchError, UsageError

PHANTOM_PATIENTS = 20
PHANTOM_SEED = 0

Call = Callable[[Callable[[], Any], str], Any]
"""``call(fn, where)`` runs one of the reader's methods (a run passes one that blames the dataset plugin)."""


def _direct(fn: Callable[[], Any], where: str) -> Any:
    return fn()


def _quiet(n: int) -> None:
    pass


def phantom_root(patients: int = PHANTOM_PATIENTS, seed: int = PHANTOM_SEED,
                 advance: Callable[[int], None] | None = None) -> Path:
    """The built-in phantom dataset, generated once into the cache folder."""
    root = cache.cache_root() / "phantom" / f"v{phantom.VERSION}-n{patients}-s{seed}"
    if not (root / ".complete").is_file():
        work = root.with_name(root.name + ".part")
        shutil.rmtree(work, ignore_errors=True)
        phantom.write_phantom(work, patients, seed, advance=advance)
        (work / ".complete").write_text("")
        shutil.rmtree(root, ignore_errors=True)
        work.rename(root)
    return root


def checked(ds: Any, *, root: Path, params: PreprocessParams, what: str = "", call: Call = _direct) -> str:
    """The dataset's fingerprint once its reader finds no problem in it; DataError with the first problem (prefixed
    by ``what``) otherwise. Data of a content already prepared with ``params`` were found clean then, and are not
    read through again (checking all of ACDC reads every volume: seconds a command need not spend twice)."""
    try:
        fingerprint: str | None = call(ds.fingerprint, "reading the data")
    except UqbenchError:  # a folder the reader cannot fingerprint: its problems say why
        fingerprint = None
    if fingerprint is None or not cache.is_prepared(fingerprint, params):
        problems = call(ds.problems, "checking the data")
        if problems:
            more = f" (and {len(problems) - 1} more; run `uqbench data check {root}`)" if len(problems) > 1 else ""
            raise DataError(f"{what}{problems[0]}{more}")
        if fingerprint is None:
            fingerprint = call(ds.fingerprint, "reading the data")
    assert fingerprint is not None
    return fingerprint


def check_folds(fold_of: dict[str, int], folds: Sequence[int], root: Path) -> None:
    """UsageError unless each of ``folds`` has test patients and leaves training patients in ``root``."""
    for k in folds:
        if k not in fold_of.values():
            raise UsageError(f"--folds: fold {k} has no patients in {root}")
        if set(fold_of.values()) == {k}:
            raise UsageError(f"--folds: fold {k} leaves no training patients in {root}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedSet:
    """A dataset's cases on both grids, with what identifies them."""

    cases: list[cache.Prepared]
    root: Path
    fingerprint: str


def prepared(ds: Any, *, root: Path, params: PreprocessParams, fingerprint: str | None = None, what: str = "",
             call: Call = _direct, notes: list[str] | None = None,
             tracker: Callable[[str, int], Callable[[int], None]] | None = None, expected: int = 0,
             patients: Callable[[str], bool] = lambda p: True) -> PreparedSet:
    """A dataset's cases on both grids (prepared into the cache on first use), of the patients ``patients`` keeps.
    The data are checked first (:func:`checked`) unless ``fingerprint`` says they were; ``notes`` collects what
    the cache repaired, and ``tracker(description, total)`` gives progress callbacks (``expected``: the cases to
    prepare, for its total)."""
    if fingerprint is None:
        fingerprint = checked(ds, root=root, params=params, what=what, call=call)
    track = tracker or (lambda description, total: _quiet)
    folder, entries = cache.prepare(ds, params=params, fingerprint=fingerprint, notes=[] if notes is None else notes,
                                    advance=track("prepare", expected))
    wanted = [m for m in entries if patients(m["patient"])]
    cases = cache.load(folder, wanted, params=params, advance=track("load", len(wanted)))
    return PreparedSet(cases=cases, root=root, fingerprint=fingerprint)
