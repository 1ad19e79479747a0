"""The run folder (OUT): its lock, its configuration, the NIfTI outputs it holds and its record of stages.

A run folder holds the run's results (config.json, cases.csv, detection.csv, summary.json), ``stages.json``
(each stage's key, what was hashed into it, whether it came from the store, its time) and ``nifti/``: the outputs
as ``uqbench evaluate`` reads them, copied from the stage store (a run folder never shares a file with the store,
so editing or damaging one cannot reach the other).
"""

from __future__ import annotations

import fcntl
import filecmp
import functools
import json
import os
import platform
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uqbench
from uqbench.config import RunConfig
from uqbench.devices import machine
from uqbench.errors import DataError, UsageError
from uqbench.files import write_atomic
from uqbench.records import fields_to_json, write_json
from uqbench.run import stages
from uqbench.run.graph import Predicted, StageGraph

NIFTI_FOLDERS = ("predictions", "probabilities", "uncertainty-maps")
"""OUT/nifti/'s folders, named like the ``uqbench evaluate`` options that read them back."""


@contextmanager
def out_lock(out: Path, *, command: str = "uqbench run") -> Iterator[None]:
    """Hold a lock on the OUT folder itself while ``command`` writes there (no lock file is left behind): a
    second command into the same folder is refused while the first works."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"--out {out}: another uqbench command is writing there now; wait for it to finish "
                             f"or choose another --out (this was {command})") from None
        yield
    finally:
        os.close(fd)


def read_config(out: Path) -> dict[str, Any] | None:
    """OUT/config.json as a dict (None when absent); DataError naming it when it is not JSON."""
    path = out / "config.json"
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not a uqbench configuration ({exc}); delete that folder or choose "
                        "another --out") from None
    if not isinstance(old, dict):
        raise DataError(f"{path}: not a uqbench configuration; delete that folder or choose another --out")
    return old


def check_out(cfg: RunConfig) -> None:
    """Refuse an OUT folder that holds an evaluation, or a run with other settings (UsageError naming them), or a
    config.json that is not one; writes nothing."""
    old = read_config(cfg.out)
    if old is None:
        return
    if old.get("command") == "evaluate":
        raise UsageError(f"--out {cfg.out}: holds a `uqbench evaluate` result; choose another --out or delete "
                         "that folder")
    new = json.loads(json.dumps(cfg.identity()))  # as it would read back from config.json
    diff = [k for k in new if old.get(k) != new[k]]
    if diff:
        raise UsageError(f"--out {cfg.out}: holds a run with other settings ({', '.join(diff)}); "
                         "choose another --out or delete that folder")


def write_config(cfg: RunConfig) -> None:
    """OUT/config.json: the run's settings, with the software and machine that ran it."""
    write_json(cfg.out / "config.json", cfg.record() | {"uqbench": uqbench.__version__,
                                                         "python": platform.python_version(),
                                                         "machine": machine(cfg.device)})


def export_nifti(folder: Path, umap_name: str, p: Predicted) -> None:
    """A fold's NIfTI outputs as ``folder/{predictions,probabilities,uncertainty-maps}/<patient>_<phase>.nii.gz``,
    the layout ``uqbench evaluate`` reads, copied from the store; a file already there with the same bytes is
    kept, any other (a user's edit, a damaged copy) replaced."""
    for c in p.cases:
        for sub, src in zip(NIFTI_FOLDERS, (stages.labels_file(p.scored.path, c),
                                            stages.probabilities_file(p.predictions.path, c),
                                            stages.map_file(p.maps.path, c, umap_name)), strict=True):
            dst = folder / sub / f"{stages.case_key(c)}.nii.gz"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_file() and not os.path.samefile(src, dst) and filecmp.cmp(src, dst, shallow=False):
                continue
            write_atomic(dst, functools.partial(_copy, src))


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


def write_stages(out: Path, g: StageGraph) -> None:
    """OUT/stages.json: every stage the run used, with its key, what was hashed into it, and its time."""
    write_json(out / "stages.json", {"stages": [fields_to_json(r) | {"hashed": key.record} for r, key in g.keys]})


def why_recomputed(out: Path, g: StageGraph) -> list[str]:
    """For a run folder run before: which stages got another key this time, and what changed (a plugin's
    version, a setting), from the keys' records."""
    path = out / "stages.json"
    try:
        before = {(s["stage"], s["fold"], s["cases"], s["detail"]): s
                  for s in json.loads(path.read_text())["stages"]}
    except (OSError, ValueError, KeyError, TypeError):
        return []
    notes = []
    for record, key in g.keys:
        old = before.get((record.stage, record.fold, record.cases, record.detail))
        if old is None or old.get("key") == key.digest:
            continue
        changed = [f"{path} {a!r} -> {b!r}" for path, a, b in _differences(old.get("hashed", {}), key.record)
                   if not path.startswith("inputs")]
        what = "; ".join(changed) if changed else "an input it reads was recomputed"
        stage = f"{record.stage} ({record.detail})" if record.detail else record.stage
        notes.append(f"{stage} of fold {record.fold}, {record.cases} patients, recomputed: {what}")
    return notes


def _differences(a: Any, b: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, old, new) of every leaf where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for name in sorted(set(a) | set(b)):
            yield from _differences(a.get(name), b.get(name), f"{path}.{name}" if path else name)
    elif a != b:
        yield path, a, b
