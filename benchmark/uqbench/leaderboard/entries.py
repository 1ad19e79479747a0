"""Leaderboard entries: one JSON file per method and board under ``leaderboards/entries/``, made by ``uqbench
submit`` from a finished run and read back by ``uqbench leaderboard``.

An entry holds numbers and provenance only (never images or labels). Its schema is the dataclasses below, read
strictly (a missing, extra or mistyped field is refused with its path); ``SCHEMA_VERSION`` is bumped whenever a
field changes name, type or meaning. leaderboards/README.md documents every field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from uqbench import config as run_config
from uqbench.api import CLASS_NAMES, PHASES
from uqbench.data.folds import NUM_FOLDS
from uqbench.errors import DataError, UqbenchError
from uqbench.kinds import DETECTOR, LOSS, SEGMENTER, UNCERTAINTY
from uqbench.protocol.detection import Froc
from uqbench.records import from_json, to_json, write_json
from uqbench.registry import registry
from uqbench.results import summary as summaries
from uqbench.results.summary import ByPhaseClass, Summary

SCHEMA_VERSION = 1

FROC_FALSE_POSITIVES = (1.0, 2.0, 5.0, 10.0)
"""False-positive patches per volume at which an entry records the voxel FROC's sensitivity."""

NOTE_LIMIT = 200
"""The longest ``--note`` accepted, in characters."""


class Refused(UqbenchError):
    """``uqbench submit`` will not make an entry of this run; the message says why."""


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
    test_volumes: int | None = None  # a held-out test set (--test-data) scored apart: its volumes
    test_mean_foreground_dice: float | None = None
    test_mean_foreground_dice_corrected: float | None = None


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
    samples: int  # MC samples T
    seed: int  # fold k trained with seed + k
    external: bool  # predictions made outside uqbench and scored by it
    results: Results
    cost: Cost
    software: Software
    note: str | None

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What makes two entries of one board the same method: segmenter, loss, map and detector specs."""
        m = self.method
        return (m.segmenter.spec, m.loss.spec, m.uncertainty.spec, m.detector.spec if m.detector else "none")

    @property
    def file_stem(self) -> str:
        """The entry's file name without ``.json``: the board, then the method, in safe characters."""
        return f"{self.board}--{slug('-'.join(self.key))}"

    @property
    def ranking_dice(self) -> float:
        """What a board ranks by: mean foreground Dice after correction, as segmented without a detector."""
        r = self.results
        return r.mean_foreground_dice if r.mean_foreground_dice_corrected is None else \
            r.mean_foreground_dice_corrected


def slug(text: str) -> str:
    """``text`` in characters safe in a file name on every system (anything else becomes '_')."""
    return re.sub(r"[^A-Za-z0-9.+=-]", "_", text)


def board_name(dataset: str, profile: str, protocol: str) -> str:
    """A board's file stem: one board per dataset, profile and protocol preset (with its overrides)."""
    return slug(f"{dataset}-{profile}-{protocol}")


def froc_sensitivity(froc: Froc, false_positives: float) -> float:
    """The voxel sensitivity at ``false_positives`` patches per volume: the highest sensitivity of any threshold
    whose false positives do not exceed it (no interpolation; 0 when none does)."""
    ok = [s for s, fp in zip(froc.sensitivity, froc.false_positives_per_volume, strict=True) if fp <= false_positives]
    return max(ok, default=0.0)


def fp_key(value: float) -> str:
    """The key of ``froc_sensitivity`` for ``value`` false positives per volume ("1", "2", "5", "10")."""
    return f"{value:g}"


def _index(a: Any) -> Any:
    return {"mae": a.mae if math.isfinite(a.mae) else None, "r": a.r if math.isfinite(a.r) else None, "n": a.n}


def entry_record(summary: Summary, cfg: run_config.RunConfig, *, note: str | None) -> dict[str, Any]:
    """The JSON record of the entry a finished run makes (checked by :func:`parse` before it is written)."""
    methods = {k: {"spec": m.spec, "distribution": m.distribution, "version": m.version}
               for k, m in summary.provenance.methods.items()}
    return _record(summary, methods={"segmenter": methods[SEGMENTER.name], "loss": methods[LOSS.name],
                                     "uncertainty": methods[UNCERTAINTY.name],
                                     "detector": methods.get(DETECTOR.name)},
                   folds=list(cfg.folds), samples=cfg.samples, external=False, note=note)


def _record(summary: Summary, *, methods: dict[str, Any], folds: list[int], samples: int, external: bool,
            note: str | None) -> dict[str, Any]:
    seg, fixed, prov = summary.segmentation, summary.corrected, summary.provenance
    curves, effort = summary.detection_curves, summary.correction_effort
    rc, cal = summary.risk_coverage, summary.calibration
    dataset = "phantom" if summary.dataset.phantom else summary.dataset.name
    wall: dict[str, float] = {}
    device: dict[str, float] = {}
    for s in summary.stages:
        wall[s.stage] = wall.get(s.stage, 0.0) + s.wall_s
        device[s.stage] = device.get(s.stage, 0.0) + s.device_s
    results = {
        "mean_foreground_dice": seg.mean_foreground_dice,
        "mean_foreground_dice_corrected": fixed.mean_foreground_dice if fixed else None,
        "dice": seg.dice, "dice_corrected": fixed.dice if fixed else None,
        "hd": seg.hd, "hd_corrected": fixed.hd if fixed else None,
        "clinical_units": summary.clinical.units,
        "clinical": {k: _index(a) for k, a in summary.clinical.indices.items()},
        "clinical_corrected": {k: _index(a) for k, a in summary.clinical_corrected.indices.items()}
        if summary.clinical_corrected else None,
        "aurc": rc.aurc if rc else None, "e_aurc": rc.e_aurc if rc else None,
        "ece": cal.pooled.ece if cal else None, "brier": cal.brier if cal else None,
        "slice_ap": curves.slices.ap if curves else None,
        "froc_sensitivity": {fp_key(fp): froc_sensitivity(curves.froc, fp) for fp in FROC_FALSE_POSITIVES}
        if curves else None,
        "effort_auc_slices": effort.auc_dice_vs_slices if effort else None,
        "effort_auc_patches": effort.auc_dice_vs_patches if effort else None,
    }
    if summary.test is not None:
        t = summary.test
        results |= {"test_volumes": t.segmentation.volumes,
                    "test_mean_foreground_dice": t.segmentation.mean_foreground_dice,
                    "test_mean_foreground_dice_corrected": t.corrected.mean_foreground_dice if t.corrected else None}
    return {
        "schema_version": SCHEMA_VERSION,
        "board": board_name(dataset, summary.profile, summary.protocol.label),
        "method": methods,
        "dataset": {"name": dataset, "fingerprint": summary.dataset.fingerprint, "volumes": seg.volumes},
        "profile": summary.profile,
        "protocol": {"label": summary.protocol.label, "hash": summary.protocol.digest()},
        "folds": folds, "fold_split": prov.fold_split, "samples": samples, "seed": prov.seed,
        "external": external,  # predictions made elsewhere, scored by uqbench evaluate
        "results": to_json(results),
        "cost": {"device": summary.device, "device_name": prov.device_name, "precision": prov.precision,
                 "cpu_threads": prov.cpu_threads, "wall_s": {k: round(v, 1) for k, v in wall.items()},
                 "device_s": {k: round(v, 1) for k, v in device.items()}},
        "software": {"uqbench": prov.uqbench, "git_commit": prov.git_commit, "torch": prov.torch},
        "note": note,
    }


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


def parse(record: Any, where: str) -> Entry:
    """The entry a JSON record holds; DataError naming ``where`` and the first field that breaks the schema."""
    version = record.get("schema_version") if isinstance(record, dict) else None
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
            clash = _clash(e, on[0])
            if clash:
                raise DataError(f"{folder / (e.file_stem + '.json')}: on board {board} its {clash}")
    return entries


def _clash(entry: Entry, other: Entry) -> str:
    """How ``entry`` was made on other terms than ``other`` of the same board ("" when it was not)."""
    where = f"{other.file_stem}.json"
    if entry.protocol.hash != other.protocol.hash:
        return f"protocol {entry.protocol.label} has hash {entry.protocol.hash} where {where} has {other.protocol.hash}"
    if entry.fold_split != other.fold_split:
        return f"fold split is {entry.fold_split[:12]} where {where} has {other.fold_split[:12]}"
    if entry.dataset.fingerprint != other.dataset.fingerprint:
        return f"dataset fingerprint is {entry.dataset.fingerprint[:12]} where {where} has " \
               f"{other.dataset.fingerprint[:12]}"
    if entry.dataset.volumes != other.dataset.volumes:
        return f"{entry.dataset.volumes} volumes were scored where {where} has {other.dataset.volumes}"
    return ""


def from_run(run: Path, *, note: str | None = None) -> Entry:
    """The entry a finished run folder (or ``uqbench evaluate`` folder) makes; Refused with the reason when it
    cannot stand on a board."""
    if note is not None and ("\n" in note or "\r" in note or len(note) > NOTE_LIMIT):
        raise Refused(f"--note: one line of at most {NOTE_LIMIT} characters")
    evaluated = _evaluation(run / "config.json")
    cfg = run_config.read(run / "config.json") if evaluated is None else None
    try:
        summary = summaries.read(run / "summary.json")
    except DataError as exc:
        raise Refused(f"{run}: not a finished run ({exc})") from None
    if cfg is None:
        assert evaluated is not None
        return _from_evaluation(run, evaluated, summary, note=note)
    if sorted(cfg.folds) != list(range(NUM_FOLDS)):
        raise Refused(f"{run}: ran folds {','.join(map(str, cfg.folds))}; an entry needs all folds "
                      f"0..{NUM_FOLDS - 1}")
    _check_overrides(run, cfg)
    _check_complete(run, cfg, summary)
    return parse(entry_record(summary, cfg, note=note), f"{run} (the entry it makes)")


def _evaluation(path: Path) -> dict[str, Any] | None:
    """config.json of a ``uqbench evaluate`` folder, None for anything else (a run's is read as one)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("command") == "evaluate" else None


def _from_evaluation(run: Path, record: dict[str, Any], summary: Summary, *, note: str | None) -> Entry:
    """An entry of predictions made elsewhere: marked external, its segmenter the evaluation's ``--name``, its
    map and detector the registered ones that ran (a given map is ``external``). The oracle detector is the
    protocol's ceiling, not a method, and is refused; so are cases of fewer than all folds."""
    from uqbench.evaluate import ORACLE

    if record.get("detector") == ORACLE:
        raise Refused(f"{run}: --detector oracle is the ceiling of simulated correction, not a method; submit an "
                      "evaluation without a detector or with a registered one")
    try:
        cases = pd.read_csv(run / "cases.csv")
        folds = sorted(int(f) for f in cases["fold"].unique())
    except (OSError, ValueError, KeyError) as exc:
        raise Refused(f"{run / 'cases.csv'}: unreadable ({exc})") from None
    if folds != list(range(NUM_FOLDS)):
        raise Refused(f"{run}: scored cases of folds {','.join(map(str, folds))} (-1: held out); an entry needs "
                      f"every case of folds 0..{NUM_FOLDS - 1} and no other")
    if len(cases[["patient", "phase"]].drop_duplicates()) != summary.segmentation.volumes:
        raise Refused(f"{run / 'cases.csv'}: its volumes differ from summary.json's")
    if record.get("detector") and not (run / "detection.csv").is_file():
        raise Refused(f"{run / 'detection.csv'}: missing (the evaluation did not finish detection)")
    ran = {k: {"spec": m.spec, "distribution": m.distribution, "version": m.version}
           for k, m in summary.provenance.methods.items()}
    made = {"distribution": "external", "version": "-"}
    given = "external" if record.get("uncertainty_maps") else "none"
    methods = {"segmenter": {"spec": str(record.get("name", "external"))} | made, "loss": {"spec": "none"} | made,
               "uncertainty": ran.get(UNCERTAINTY.name, {"spec": given} | made), "detector": ran.get(DETECTOR.name)}
    return parse(_record(summary, methods=methods, folds=folds, samples=1, external=True, note=note),
                 f"{run} (the entry it makes)")


def _check_overrides(run: Path, cfg: run_config.RunConfig) -> None:
    """Refuse a run whose recipe or sample count is not its methods' own (``--iterations`` and other smoke
    overrides): a board compares methods as their authors define them."""
    reg = registry()
    seg = reg.create(SEGMENTER, cfg.segmenter)
    own = replace(seg.recipe(cfg.profile), loss=cfg.loss)
    if own != cfg.recipe:
        changed = [f"{f} {getattr(cfg.recipe, f)!r} (the {cfg.profile.value} recipe has {getattr(own, f)!r})"
                   for f in (x.name for x in fields(own)) if getattr(own, f) != getattr(cfg.recipe, f)]
        raise Refused(f"{run}: ran with overridden {'; '.join(changed)}: a smoke run (--iterations) cannot be "
                      "submitted")
    samples = reg.create(UNCERTAINTY, cfg.uncertainty).samples
    if cfg.samples != samples:
        raise Refused(f"{run}: ran with --samples {cfg.samples}; map '{cfg.uncertainty}' is defined with T={samples}")


def _check_complete(run: Path, cfg: run_config.RunConfig, summary: Summary) -> None:
    """Refuse a run whose outputs do not all belong to its settings or do not cover every case."""
    if summary.protocol.digest() != cfg.protocol.digest() or summary.profile != cfg.profile.value:
        raise Refused(f"{run}: summary.json and config.json describe different runs (a partial rerun?)")
    trained = {s.fold for s in summary.stages if s.stage == "train"}
    if trained != set(cfg.folds):
        raise Refused(f"{run}: summary.json holds training of folds {sorted(trained)}, not {list(cfg.folds)}")
    try:
        cases = pd.read_csv(run / "cases.csv")
    except (OSError, ValueError) as exc:
        raise Refused(f"{run / 'cases.csv'}: unreadable ({exc})") from None
    volumes = len(cases[["patient", "phase"]].drop_duplicates()) if {"patient", "phase"} <= set(cases) else -1
    if volumes != summary.segmentation.volumes:
        raise Refused(f"{run / 'cases.csv'}: {volumes} volumes, summary.json scored {summary.segmentation.volumes}")
    if cfg.detector and not (run / "detection.csv").is_file():
        raise Refused(f"{run / 'detection.csv'}: missing (the run did not finish detection)")


def write(folder: Path, entry: Entry, *, replace_existing: bool = False) -> Path:
    """Write ``entry`` as ``folder/<file stem>.json``; Refused when the board holds a clashing entry, or the same
    method without ``replace_existing``."""
    others = [e for e in read_all(folder) if e.board == entry.board]
    for other in others:
        if other.key == entry.key:
            if not replace_existing:
                raise Refused(f"{folder / (other.file_stem + '.json')}: board {entry.board} already has this method "
                              "(--replace to replace it)")
            continue
        clash = _clash(entry, other)
        if clash:
            raise Refused(f"board {entry.board}: this run's {clash} (another dataset, split or protocol cannot share "
                          "a board)")
    path = folder / f"{entry.file_stem}.json"
    if path.exists() and not replace_existing:
        raise Refused(f"{path}: exists and holds another method with the same file name")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, to_json(entry))
    return path


def boards(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """Entries by board, each board's in file order."""
    out: dict[str, list[Entry]] = {}
    for e in entries:
        out.setdefault(e.board, []).append(e)
    return out
