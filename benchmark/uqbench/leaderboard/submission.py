"""Making an entry (``uqbench submit``): a finished run's or evaluation's summary checked for what a board
needs (every fold, the methods' own recipes, complete outputs) and written as a leaderboard entry
(``uqbench.leaderboard.schema``).
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from uqbench import config as run_config
from uqbench.data.folds import NUM_FOLDS
from uqbench.errors import DataError, UqbenchError
from uqbench.kinds import DETECTOR, LOSS, SAMPLER, SEGMENTER, UNCERTAINTY
from uqbench.leaderboard.schema import (
    FROC_FALSE_POSITIVES,
    NOTE_LIMIT,
    SCHEMA_VERSION,
    Entry,
    board_name,
    clash,
    digest,
    fp_key,
    parse,
    read_all,
)
from uqbench.protocol.detection import Froc
from uqbench.records import to_json, write_json
from uqbench.registry import registry
from uqbench.results import summary as summaries
from uqbench.results import tables
from uqbench.results.summary import Summary


class Refused(UqbenchError):
    """``uqbench submit`` will not make an entry of this run; the message says why."""


def froc_sensitivity(froc: Froc, false_positives: float) -> float:
    """The voxel sensitivity at ``false_positives`` patches per volume: the highest sensitivity of any threshold
    whose false positives do not exceed it (no interpolation; 0 when none does)."""
    ok = [s for s, fp in zip(froc.sensitivity, froc.false_positives_per_volume, strict=True) if fp <= false_positives]
    return max(ok, default=0.0)


def _index(a: Any) -> Any:
    return {"mae": a.mae if math.isfinite(a.mae) else None, "r": a.r if math.isfinite(a.r) else None, "n": a.n}


def entry_record(summary: Summary, cfg: run_config.RunConfig, *, note: str | None) -> dict[str, Any]:
    """The JSON record of the entry a finished run makes (checked by :func:`parse` before it is written)."""
    methods = {k: {"spec": m.spec, "distribution": m.distribution, "version": m.version}
               for k, m in summary.provenance.methods.items()}
    return _record(summary, methods={"segmenter": methods[SEGMENTER.name], "loss": methods[LOSS.name],
                                     "sampler": methods[SAMPLER.name], "uncertainty": methods[UNCERTAINTY.name],
                                     "detector": methods.get(DETECTOR.name)},
                   folds=list(cfg.folds), samples=cfg.samples, external=False, note=note)


def _record(summary: Summary, *, methods: dict[str, Any], folds: list[int], samples: int, external: bool,
            note: str | None) -> dict[str, Any]:
    """The entry's record, its digest last."""
    record = _body(summary, methods=methods, folds=folds, samples=samples, external=external, note=note)
    return record | {"digest": digest(to_json(record))}


def _body(summary: Summary, *, methods: dict[str, Any], folds: list[int], samples: int, external: bool,
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
        "failure_slice_share": curves.slices.share_of_slices_with_failures_per_volume if curves else None,
        "froc_sensitivity": {fp_key(fp): froc_sensitivity(curves.froc, fp) for fp in FROC_FALSE_POSITIVES}
        if curves else None,
        "effort_auc_slices": effort.auc_dice_vs_slices if effort else None,
        "effort_auc_patches": effort.auc_dice_vs_patches if effort else None,
        "per_volume": summary.per_volume,
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
        "protocol": {"label": summary.protocol.label, "hash": summary.protocol.digest(),
                     "budget": summary.protocol.budget, "bootstrap_resamples": summary.protocol.bootstrap_resamples,
                     "bootstrap_seed": summary.protocol.bootstrap_seed},
        "folds": folds, "fold_split": prov.fold_split, "samples": samples, "seed": prov.seed,
        "external": external,  # predictions made elsewhere, scored by uqbench evaluate
        "results": to_json(results),
        "cost": {"device": summary.device, "device_name": prov.device_name, "precision": prov.precision,
                 "cpu_threads": prov.cpu_threads, "wall_s": {k: round(v, 1) for k, v in wall.items()},
                 "device_s": {k: round(v, 1) for k, v in device.items()}},
        "software": {"uqbench": prov.uqbench, "git_commit": prov.git_commit, "torch": prov.torch},
        "note": note,
    }


def from_run(run: Path, *, note: str | None = None) -> Entry:
    """The entry a finished run folder (or ``uqbench evaluate`` folder) makes; Refused with the reason when it
    cannot stand on a board."""
    if note is not None and ("\n" in note or "\r" in note or len(note) > NOTE_LIMIT):
        raise Refused(f"--note: one line of at most {NOTE_LIMIT} characters")
    cfg = run_config.read_folder(run / "config.json")
    try:
        summary = summaries.read(run / "summary.json")
    except DataError as exc:
        raise Refused(f"{run}: not a finished run ({exc})") from None
    if isinstance(cfg, run_config.EvaluationConfig):
        return _from_evaluation(run, cfg, summary, note=note)
    if sorted(cfg.folds) != list(range(NUM_FOLDS)):
        raise Refused(f"{run}: ran folds {','.join(map(str, cfg.folds))}; an entry needs all folds "
                      f"0..{NUM_FOLDS - 1}")
    _check_overrides(run, cfg)
    _check_complete(run, cfg, summary)
    if SAMPLER.name not in summary.provenance.methods:
        raise Refused(f"{run}: made before samplers were recorded (its summary names none); run it again to submit")
    return parse(entry_record(summary, cfg, note=note), f"{run} (the entry it makes)")


def _from_evaluation(run: Path, evaluated: run_config.EvaluationConfig, summary: Summary, *, note: str | None
                     ) -> Entry:
    """An entry of predictions made elsewhere: marked external, its segmenter the evaluation's ``--name``, its
    map and detector the registered ones that ran (a given map is ``external``). The oracle detector is the
    protocol's ceiling, not a method, and is refused; so are cases of fewer than all folds."""
    from uqbench.scoring.folder import ORACLE

    if evaluated.detector == ORACLE:
        raise Refused(f"{run}: --detector oracle is the ceiling of simulated correction, not a method; submit an "
                      "evaluation without a detector or with a registered one")
    try:
        cases, _ = tables.read_checked(run, summary)
    except DataError as exc:
        raise Refused(str(exc)) from None
    folds = sorted(int(f) for f in cases["fold"].unique())
    if folds != list(range(NUM_FOLDS)):
        raise Refused(f"{run}: scored cases of folds {','.join(map(str, folds))} (-1: held out); an entry needs "
                      f"every case of folds 0..{NUM_FOLDS - 1} and no other")
    ran = {k: {"spec": m.spec, "distribution": m.distribution, "version": m.version}
           for k, m in summary.provenance.methods.items()}
    made = {"distribution": "external", "version": "-"}
    given = "external" if evaluated.uncertainty_maps else "none"
    methods = {"segmenter": {"spec": evaluated.name} | made, "loss": {"spec": "none"} | made,
               "sampler": {"spec": "external"} | made,
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
    umap = reg.create(UNCERTAINTY, cfg.uncertainty)
    samples = reg.create(SAMPLER, cfg.sampler).count(umap.samples, one_pass=umap.samples == 1)
    if cfg.samples != samples:
        raise Refused(f"{run}: ran with --samples {cfg.samples}; map '{cfg.uncertainty}' under sampler "
                      f"'{cfg.sampler}' is defined with T={samples}")


def _check_complete(run: Path, cfg: run_config.RunConfig, summary: Summary) -> None:
    """Refuse a run whose outputs do not all belong to its settings or do not cover every case."""
    if summary.protocol.digest() != cfg.protocol.digest() or summary.profile != cfg.profile.value:
        raise Refused(f"{run}: summary.json and config.json describe different runs (a partial rerun?)")
    trained = {s.fold for s in summary.stages if s.stage == "train"}
    if trained != set(cfg.folds):
        raise Refused(f"{run}: summary.json holds training of folds {sorted(trained)}, not {list(cfg.folds)}")
    try:
        tables.read_checked(run, summary)
    except DataError as exc:
        raise Refused(str(exc)) from None


def write(folder: Path, entry: Entry, *, replace_existing: bool = False) -> tuple[Path, Entry | None]:
    """Write ``entry`` as ``folder/<file stem>.json``; Refused when the board holds a clashing entry, or the same
    method without ``replace_existing``. Returns the path and the entry it replaced (None when none)."""
    replaced = None
    for other in (e for e in read_all(folder) if e.board == entry.board):
        if other.key == entry.key and other.seed == entry.seed:
            if not replace_existing:
                raise Refused(f"{folder / (other.file_stem + '.json')}: board {entry.board} already has this method "
                              f"with seed {entry.seed} ({other.cost.precision}; --replace to replace it, or post "
                              "another seed)")
            replaced = other
            continue
        why = clash(entry, other)
        if why:
            raise Refused(f"board {entry.board}: this run's {why} (another dataset, split or protocol cannot share "
                          "a board)")
    path = folder / f"{entry.file_stem}.json"
    if path.exists() and not replace_existing:
        raise Refused(f"{path}: exists and holds another method with the same file name")
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, to_json(entry))
    return path, replaced
