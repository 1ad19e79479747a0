"""Leaderboard entries, as read: one JSON file per method and board under ``leaderboards/entries/``, made by
``uqbench submit`` (``uqbench.leaderboard.submission``) and read back by ``uqbench leaderboard``.

An entry holds numbers and provenance only (never images or labels). Its schema is the dataclasses below, read
strictly (a missing, extra or mistyped field is refused with its path); ``SCHEMA_VERSION`` is bumped whenever a
field changes name, type or meaning. leaderboards/README.md documents every field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uqbench.api import CLASS_NAMES, PHASES
from uqbench.data.folds import NUM_FOLDS
from uqbench.errors import DataError
from uqbench.records import from_json
from uqbench.results.summary import ByPhaseClass, VolumeValues

SCHEMA_VERSION = 4  # 2: its record's digest; 3: per-volume values, the budget and bootstrap, seeds; 4: the sampler

FROC_FALSE_POSITIVES = (1.0, 2.0, 5.0, 10.0)
"""False-positive patches per volume at which an entry records the voxel FROC's sensitivity."""

NOTE_LIMIT = 200
"""The longest ``--note`` accepted, in characters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Method:
    """One method an entry used: the spec it ran with and the distribution that provided it."""

    spec: str
    distribution: str
    version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Methods:
    segmenter: Method
    loss: Method
    sampler: Method  # how predictive samples were drawn (mc-dropout, ensemble:M, tta; external for evaluations)
    uncertainty: Method
    detector: Method | None  # None: segmentation and uncertainty only, no detection or correction


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    name: str  # "phantom" for the built-in phantom, else the reader's name (e.g. "acdc")
    fingerprint: str  # content hash of the data folder
    volumes: int  # scored (patients x phases)


@dataclass(frozen=True, slots=True, kw_only=True)
class Protocol:
    label: str  # preset name with its overrides, e.g. "uqbench" or "seed-code+correction=patch"
    hash: str
    budget: int  # B of AUCC@B
    bootstrap_resamples: int
    bootstrap_seed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Index:
    """A clinical index's agreement with the reference over n patients: MAE and Pearson r (None where undefined:
    no patient with the index defined, fewer than 2, or no variation)."""

    mae: float | None
    r: float | None
    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Results:
    """The headline figures; ``*_corrected`` and the detection figures are None without a detector."""

    mean_foreground_dice: float
    mean_foreground_dice_corrected: float | None
    dice: ByPhaseClass  # phase -> class -> mean, sd, n over volumes
    dice_corrected: ByPhaseClass | None
    hd: ByPhaseClass  # mm
    hd_corrected: ByPhaseClass | None
    clinical_units: dict[str, str]
    clinical: dict[str, Index]
    clinical_corrected: dict[str, Index] | None
    aurc: float | None  # risk-coverage of the uncertainty map (risk as protocol.risk says); None: no map
    e_aurc: float | None
    ece: float | None  # pooled reliability of the mean softmax; None: no probabilities
    brier: float | None
    slice_ap: float | None  # slices needing correction, under the protocol's AP convention
    froc_sensitivity: dict[str, float] | None  # false positives per volume ("1", "2", "5", "10") -> sensitivity
    effort_auc_slices: float | None  # area under mean Dice against the share of slices inspected
    effort_auc_patches: float | None
    per_volume: list[VolumeValues]  # every volume's headline values: a board's intervals are drawn from them
    test_volumes: int | None = None  # a held-out test set (--test-data) scored apart: its volumes
    test_mean_foreground_dice: float | None = None
    test_mean_foreground_dice_corrected: float | None = None
    # the share of each volume's slices holding a failure, averaged over volumes (the paper's Table III): the regime a
    # detector works in; None without a detector, and in entries made before it was recorded
    failure_slice_share: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cost:
    """What the run cost, summed per stage over folds: wall and device seconds (GPU seconds on CUDA, CPU
    seconds of the process on CPU) when each stage was computed, wherever that was."""

    device: str  # "cpu" or "cuda"
    device_name: str | None
    precision: str
    cpu_threads: int
    wall_s: dict[str, float]
    device_s: dict[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Software:
    uqbench: str
    git_commit: str | None
    torch: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One row of one board."""

    schema_version: int
    board: str  # the board's file stem: <dataset>-<profile>-<protocol label>
    method: Methods
    dataset: Dataset
    profile: str
    protocol: Protocol
    folds: list[int]
    fold_split: str  # sha256 of the (patient, fold) pairs
    samples: int  # T, the samples the sampler drew for the map
    seed: int  # fold k trained with seed x 1000 + k (uqbench.run.seeds)
    external: bool  # predictions made outside uqbench and scored by it
    results: Results
    cost: Cost
    software: Software
    note: str | None
    digest: str  # sha256 of the record without this field, written by `uqbench submit`: a hand edit is refused

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """What makes two entries of one board the same method: segmenter, loss, sampler, map and detector specs
        (a method may post several seeds, one entry each)."""
        m = self.method
        return (m.segmenter.spec, m.loss.spec, m.sampler.spec, m.uncertainty.spec,
                m.detector.spec if m.detector else "none")

    @property
    def file_stem(self) -> str:
        """The entry's file name without ``.json``: the board, the method and the seed, in safe characters."""
        return f"{self.board}--{slug('-'.join(self.key))}--seed{self.seed}"


def slug(text: str) -> str:
    """``text`` in characters safe in a file name on every system (anything else becomes '_')."""
    return re.sub(r"[^A-Za-z0-9.+=-]", "_", text)


def board_name(dataset: str, profile: str, protocol: str) -> str:
    """A board's file stem: one board per dataset, profile and protocol preset (with its overrides)."""
    return slug(f"{dataset}-{profile}-{protocol}")


def fp_key(value: float) -> str:
    """The key of ``froc_sensitivity`` for ``value`` false positives per volume ("1", "2", "5", "10")."""
    return f"{value:g}"


def _finite(value: Any, where: str) -> None:
    """ValueError naming the first number in ``value`` that is NaN or infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, f"{where}[{i}]")


def digest(record: dict[str, Any]) -> str:
    """The sha256 of an entry's record without its ``digest`` field, over canonical JSON: sorted keys, and a null
    field the same as an absent one (an optional field is written as null, whether the record made had it or not)."""
    body = _without_nulls({k: v for k, v in record.items() if k != "digest"})
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def parse(record: Any, where: str) -> Entry:
    """The entry a JSON record holds; DataError naming ``where`` and the first field that breaks the schema, or
    when its content is not what ``uqbench submit`` wrote (the digest differs: a number edited by hand)."""
    version = record.get("schema_version") if isinstance(record, dict) else None
    if isinstance(version, int) and version < SCHEMA_VERSION:
        raise DataError(f"{where}: entry schema version {version} holds no per-volume values, which a board's "
                        f"intervals are drawn from; make the entry again with `uqbench submit` (version "
                        f"{SCHEMA_VERSION})")
    if version != SCHEMA_VERSION:
        raise DataError(f"{where}: entry schema version {version!r}; this uqbench reads version {SCHEMA_VERSION}")
    try:
        entry: Entry = from_json(Entry, record, "entry")
        _finite(record, "entry")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: schema violation: {exc}") from None
    problems = _inconsistent(entry)
    if problems:
        raise DataError(f"{where}: schema violation: {problems}")
    if entry.digest != digest(record):
        raise DataError(f"{where}: its content is not what `uqbench submit` wrote (the digest differs: edited by "
                        "hand?); make the entry again with `uqbench submit`")
    return entry


def _inconsistent(e: Entry) -> str:
    """What in a well-typed entry contradicts itself ("" when nothing)."""
    if e.board != board_name(e.dataset.name, e.profile, e.protocol.label):
        return f"board {e.board!r} is not its dataset, profile and protocol ({e.dataset.name}, {e.profile}, " \
               f"{e.protocol.label})"
    if sorted(e.folds) != list(range(NUM_FOLDS)):
        return f"folds {e.folds}: an entry covers all folds 0..{NUM_FOLDS - 1}"
    with_detector = e.method.detector is not None
    detection = (e.results.mean_foreground_dice_corrected, e.results.dice_corrected, e.results.hd_corrected,
                 e.results.clinical_corrected, e.results.slice_ap, e.results.froc_sensitivity,
                 e.results.effort_auc_slices, e.results.effort_auc_patches)
    if any((v is None) == with_detector for v in detection):
        return "corrected and detection results must be present exactly when a detector is"
    per = e.results.per_volume
    if len(per) != e.dataset.volumes or len({(v.patient, v.phase) for v in per}) != len(per):
        return f"results.per_volume holds {len(per)} volumes (distinct by patient and phase), not the " \
               f"{e.dataset.volumes} scored"
    if any((v.aucc is None) == with_detector for v in per):
        return "results.per_volume: the detector's values must be present exactly when a detector is"
    for name, table in (("dice", e.results.dice), ("hd", e.results.hd)):
        for phase in PHASES:
            missing = [c for c in CLASS_NAMES[1:] if c not in table.get(phase, {})]
            if missing:
                return f"results.{name}.{phase} lacks {', '.join(missing)}"
    if e.note is not None and ("\n" in e.note or "\r" in e.note or len(e.note) > NOTE_LIMIT):
        return f"note: one line of at most {NOTE_LIMIT} characters"
    return ""


def read(path: Path) -> Entry:
    """The entry in ``path``, which must be named after it; DataError naming the file otherwise."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable entry ({exc})") from None
    entry = parse(record, str(path))
    if path.stem != entry.file_stem:
        raise DataError(f"{path}: holds the entry {entry.file_stem}.json (renamed by hand?)")
    return entry


def read_all(folder: Path) -> list[Entry]:
    """Every entry under ``folder`` (``leaderboards/entries``), checked one by one and board by board."""
    entries = [read(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    for board in sorted({e.board for e in entries}):
        on = [e for e in entries if e.board == board]
        for e in on[1:]:
            why = clash(e, on[0])
            if why:
                raise DataError(f"{folder / (e.file_stem + '.json')}: on board {board} its {why}")
    return entries


def clash(entry: Entry, other: Entry) -> str:
    """How ``entry`` was made on other terms than ``other`` of the same board ("" when it was not)."""
    where = f"{other.file_stem}.json"
    mine, theirs = entry.protocol, other.protocol
    for name in ("budget", "bootstrap_resamples", "bootstrap_seed"):
        if getattr(mine, name) != getattr(theirs, name):
            return f"protocol's {name.replace('_', ' ')} is {getattr(mine, name)} where {where} has " \
                   f"{getattr(theirs, name)}"
    if entry.protocol.hash != other.protocol.hash:
        return f"protocol {entry.protocol.label} has hash {entry.protocol.hash} where {where} has {other.protocol.hash}"
    if entry.fold_split != other.fold_split:
        return f"fold split is {entry.fold_split[:12]} where {where} has {other.fold_split[:12]}"
    if entry.dataset.fingerprint != other.dataset.fingerprint:
        return f"dataset fingerprint is {entry.dataset.fingerprint[:12]} where {where} has " \
               f"{other.dataset.fingerprint[:12]}"
    if entry.dataset.volumes != other.dataset.volumes:
        return f"{entry.dataset.volumes} volumes were scored where {where} has {other.dataset.volumes}"
    if cases(entry) != cases(other):
        return f"volumes are not the patients and phases of {where}"
    return ""


def cases(entry: Entry) -> list[tuple[str, str]]:
    """The (patient, phase) pairs an entry scored, sorted."""
    return sorted((v.patient, v.phase) for v in entry.results.per_volume)


def boards(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """Entries by board, each board's in file order."""
    out: dict[str, list[Entry]] = {}
    for e in entries:
        out.setdefault(e.board, []).append(e)
    return out
