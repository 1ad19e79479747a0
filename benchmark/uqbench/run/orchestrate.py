"""A run from start to end: the data checked and prepared, the cross-validation's folds through the stage graph
(one loop, shared by a run, a sweep's first wave and a report reading a finished run), the detectors fitted as the
protocol says, the held-out test set, and the results measured and written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.calls import Blamer
from uqbench.config import RunConfig
from uqbench.data import cache
from uqbench.data.prepare import PHANTOM_PATIENTS, PreparedSet, check_folds, checked, phantom_root, prepared
from uqbench.devices import prepare_host
from uqbench.errors import DataError, UsageError
from uqbench.kinds import DATASET
from uqbench.progress import Progress, overall, tracker
from uqbench.protocol.detection import DetectorTraining
from uqbench.registry import registry
from uqbench.results import summary as summaries
from uqbench.results.summary import DatasetInfo, HeldOut, StageRecord, Summary
from uqbench.run import outdir, stages
from uqbench.run.graph import Predicted, StageGraph, check_force, stage_graph
from uqbench.run.provenance import process_commit, provenance
from uqbench.run.seeds import HELD_OUT
from uqbench.scoring import aggregate
from uqbench.scoring.case import CalibrationCounts, Volume, sum_counts
from uqbench.store import Served, Store, open_store


@dataclass(frozen=True, slots=True, kw_only=True)
class _Data:
    """The prepared cases of a run's dataset, with their folds."""

    cases: list[cache.Prepared]
    fold_of: dict[str, int]
    root: Path
    fingerprint: str

    def split(self, k: int) -> tuple[list[cache.Prepared], list[cache.Prepared]]:
        """Fold k's test cases and its training cases."""
        return ([c for c in self.cases if self.fold_of[c.patient] == k],
                [c for c in self.cases if self.fold_of[c.patient] != k])


@dataclass(frozen=True, slots=True, kw_only=True)
class _CrossValidated:
    """Each run fold's scored test predictions, and (in-sample detector) those of its own training patients."""

    tested: dict[int, Predicted]
    training: dict[int, Predicted]


def run(cfg: RunConfig, progress: Progress | None = None, *, force: str | None = None) -> Summary:
    """Execute a resolved run and return its summary (also written to OUT/summary.json). ``force`` names a stage
    of STAGES to recompute, with every stage after it, even when the store holds it."""
    t_start = time.perf_counter()
    process_commit()  # the code this process runs, not whatever HEAD is when the summary is written
    check_force(force)
    data, store = _load(cfg, progress)  # refusals of the data come before OUT is touched
    held_out = _held_out(cfg, data, progress) if cfg.test_data else None
    with outdir.out_lock(cfg.out):
        outdir.check_out(cfg)
        outdir.write_config(cfg)
        g = stage_graph(cfg, store=store, force=force, progress=progress)
        summary = _measure_run(cfg, g, data=data, held_out=held_out, t_start=t_start)
        outdir.write_stages(cfg.out, g)
    return summary


def predict_only(cfgs: Sequence[RunConfig], progress: Progress | None = None, *, force: str | None = None
                 ) -> list[StageRecord]:
    """Train and predict fold by fold every stage that ``cfgs`` (runs on the same data) would read, into the
    store, and nothing after: a sweep's first wave. No run folder is written; the stages come back."""
    process_commit()  # as run(): the sweep's cells claim the commit it started with
    check_force(force)
    records: list[StageRecord] = []
    data, store = _load(cfgs[0], progress)
    for cfg in cfgs:
        if (cfg.data, cfg.dataset, cfg.preprocess) != (cfgs[0].data, cfgs[0].dataset, cfgs[0].preprocess):
            raise UsageError("predict_only: the runs read different data")
        g = stage_graph(cfg, store=store, force=force, progress=progress)
        for k in cfg.folds:
            _predictions(cfg, g, k=k, data=data)
        seen = {r.key for r in records}
        records += [r for r, _ in g.keys if r.key not in seen]  # each stage once
    return records


def stored_volumes(cfg: RunConfig) -> tuple[list[Volume], dict[str, np.ndarray]]:
    """A finished run's volumes as its summary scored them (patch probabilities included when its detector ran)
    and their images on the network grid ("patientNNN_ED" -> [Z, Y, X]), read from the stage store without
    computing anything; DataError naming the stage the store no longer holds."""
    data, store = _load(cfg, None)
    g = stage_graph(cfg, store=store, force=None, progress=None)
    g.offline = True
    cv = _cross_validate(cfg, g, data)
    return _volumes(cfg, g, data, cv=cv), {f"{c.patient}_{c.phase}": c.image for c in data.cases}


def _load(cfg: RunConfig, progress: Progress | None) -> tuple[_Data, Store]:
    """The run's data checked (before anything is written, so a refused run leaves nothing behind), prepared
    (on first use) and loaded, and the stage store."""
    # The torch stages are imported here, once, not on first use: a run that lasts hours then keeps the code
    # it started with even if the installation changes under it.
    import torch  # noqa: F401

    from uqbench.infer import sampling  # noqa: F401
    from uqbench.train import loop  # noqa: F401

    prepare_host()  # denormals flushed, glibc's heap kept for freed activations (uqbench.devices)
    blamer = Blamer(cfg.methods())
    root = Path(cfg.data) if cfg.data else phantom_root(advance=tracker(progress, "phantom", PHANTOM_PATIENTS))
    ds = registry().create(DATASET, cfg.dataset, root)
    fingerprint = checked(ds, root=root, params=cfg.preprocess,
                          call=lambda fn, where: blamer.call(DATASET, fn, where=where))
    fold_of = dict(ds.folds())
    check_folds(fold_of, cfg.folds, root)
    store = open_store(cache.cache_root())
    made = prepared(ds, root=root, params=cfg.preprocess, fingerprint=fingerprint, notes=store.notes,
                    tracker=lambda what, total: tracker(progress, what, total), expected=2 * len(fold_of))
    unsplit = sorted({c.patient for c in made.cases} - set(fold_of))
    if unsplit:
        raise DataError(f"{root}: {unsplit[0]} has no fold in the committed split (a held-out test patient?); "
                        f"cross-validation needs every patient of --data in the split ({len(unsplit)} are not)")
    return _Data(cases=made.cases, fold_of=fold_of, root=root, fingerprint=fingerprint), store


def _held_out(cfg: RunConfig, data: _Data, progress: Progress | None) -> PreparedSet:
    """--test-data checked and prepared before OUT is touched: read by the run's reader, no patient of it a
    training patient (by id; the test set must be disjoint)."""
    root = Path(cfg.test_data or "")
    ds = registry().create(DATASET, cfg.dataset, root)
    blamer = Blamer(cfg.methods())
    made = prepared(ds, root=root, params=cfg.preprocess, what="--test-data: ",
                    call=lambda fn, where: blamer.call(DATASET, fn, where=where),
                    tracker=lambda what, total: tracker(progress, f"test set {what}", total))
    shared = sorted({c.patient for c in made.cases} & {c.patient for c in data.cases})
    if shared:
        raise DataError(f"--test-data {root}: {shared[0]} is also a training patient in {data.root} ({len(shared)} "
                        "such); the test set must be disjoint from the training set")
    return made


def _in_sample(cfg: RunConfig) -> bool:
    """Whether the run's detector learns from each fold's own training patients (their predictions are made)."""
    return cfg.detector is not None and cfg.protocol.detector_training == "in-sample"


def _detects(cfg: RunConfig) -> bool:
    """Whether the run's detector runs: out of fold it needs 2 or more folds."""
    return cfg.detector is not None and (_in_sample(cfg) or len(cfg.folds) > 1)


def _predictions(cfg: RunConfig, g: StageGraph, *, k: int, data: _Data) -> tuple[Served, Served | None]:
    """Fold k's model(s), trained, and its predictions: of the test patients (the sampler's T samples when the
    map reads their spread; its one-pass prediction is always made, for a one-pass map of the same model), and of
    its own training patients when the detector learns in-sample. Returns the test predictions the map reads and
    the in-sample ones."""
    test, own = data.split(k)
    trained = g.members(k, own)
    one_pass = g.umap.samples == 1
    predicted = g.predict(k, role="test", cases=test, trained=trained, one_pass=True)
    if not one_pass:
        predicted = g.predict(k, role="test", cases=test, trained=trained, one_pass=False)
    own_predicted = (g.predict(k, role="training", cases=own, trained=trained, one_pass=one_pass)
                     if _in_sample(cfg) else None)
    return predicted, own_predicted


def _scored(g: StageGraph, k: int, *, role: str, cases: list[cache.Prepared], predicted: Served) -> Predicted:
    mapped = g.maps(k, role=role, cases=cases, predicted=predicted)
    return Predicted(fold=k, cases=cases, predictions=predicted, maps=mapped,
                     scored=g.score(k, role=role, cases=cases, predicted=predicted, mapped=mapped))


def _cross_validate(cfg: RunConfig, g: StageGraph, data: _Data) -> _CrossValidated:
    """Every run fold's test predictions with their maps and scores, and the same of its own training patients
    when the detector learns in-sample: the one loop over the folds."""
    cv = _CrossValidated(tested={}, training={})
    done = overall(None if g.offline else g.progress, "folds scored", len(cfg.folds))
    for k in cfg.folds:
        test, own = data.split(k)
        predicted, own_predicted = _predictions(cfg, g, k=k, data=data)
        cv.tested[k] = _scored(g, k, role="test", cases=test, predicted=predicted)
        if own_predicted is not None:
            cv.training[k] = _scored(g, k, role="training", cases=own, predicted=own_predicted)
        done(1)
    return cv


def _fit_set(mode: DetectorTraining, fold: int, cv: _CrossValidated) -> list[Predicted]:
    """The predictions fold ``fold``'s detector learns from (see uqbench.protocol.detection.DetectorTraining):
    its own training patients' in-sample, the other run folds' test patients' out of fold."""
    if mode == "in-sample":
        return [cv.training[fold]]
    return [p for k, p in cv.tested.items() if k != fold]


def _volumes(cfg: RunConfig, g: StageGraph, data: _Data, *, cv: _CrossValidated) -> list[Volume]:
    """The run folds' scored volumes, with each fold's detector's patch probabilities when the detector runs
    (fitted as the protocol says)."""
    volumes = [v for k in cfg.folds for v in g.volumes(cv.tested[k])]
    if not _detects(cfg):
        return volumes
    images = {f"{c.patient}_{c.phase}": c.image for c in data.cases}
    probs: dict[str, np.ndarray] = {}
    for k in cfg.folds:
        detected = g.detect(k, fit=_fit_set(cfg.protocol.detector_training, k, cv), test=cv.tested[k],
                            images=images)
        with np.load(detected.path / "probs.npz") as z:
            probs |= {name: z[name] for name in z.files}
    return [replace(v, patch_probs=probs[f"{v.patient}_{v.phase}"]) for v in volumes]


def _measure_run(cfg: RunConfig, g: StageGraph, *, data: _Data, held_out: PreparedSet | None,
                 t_start: float) -> Summary:
    out, protocol = cfg.out, cfg.protocol
    cv = _cross_validate(cfg, g, data)
    rows: list[dict[str, Any]] = []
    counts: list[CalibrationCounts] = []
    for k in cfg.folds:
        scored = cv.tested[k].scored
        rows += json.loads((scored.path / "rows.json").read_text())
        counts += stages.read_calibration(scored.path)
        outdir.export_nifti(out / "nifti", cfg.uncertainty, cv.tested[k])
    volumes = _volumes(cfg, g, data, cv=cv)
    notes: list[str] = []
    if cfg.detector and not _detects(cfg):
        notes.append(f"detector '{cfg.detector}' not run: it is fitted out of fold, which needs 2 or more --folds "
                     "(or --detector-training in-sample)")
    measured = aggregate.measure(rows=rows, volumes=volumes, reliability=sum_counts(counts), protocol=protocol,
                                 params=cfg.preprocess)
    test = None if held_out is None else _test_set(cfg, g, data=data, held_out=held_out, cv=cv)
    notes = g.store.notes + outdir.why_recomputed(out, g) + notes
    summary = Summary.of(
        measured.results, profile=cfg.profile.value, device=cfg.device,
        timings_s=measured.timings_s | {"run_s": time.perf_counter() - t_start}, notes=notes,
        protocol=protocol, stages=[r for r, _ in g.keys],
        dataset=DatasetInfo(name=cfg.dataset, root=str(data.root), fingerprint=data.fingerprint,
                            phantom=cfg.data is None),
        provenance=provenance(methods=cfg.methods(), device=cfg.device, precision=cfg.precision, seed=cfg.seed,
                              fold_of=data.fold_of),
        test=test)
    aggregate.write_tables(out, measured, protocol=protocol)
    summaries.write(out / "summary.json", summary)
    return summary


def _test_set(cfg: RunConfig, g: StageGraph, *, data: _Data, held_out: PreparedSet,
              cv: _CrossValidated) -> HeldOut:
    """--test-data after the cross-validation: the segmenter trained on every training patient predicts the
    held-out cases, the detector is fitted on every cross-validation prediction (out of fold by construction),
    and the held-out cases are scored and corrected; OUT/test/ gets their tables and NIfTI."""
    trained = g.members(HELD_OUT, data.cases)
    predicted = g.predict(HELD_OUT, role="held-out", cases=held_out.cases, trained=trained, one_pass=True)
    if g.umap.samples > 1:
        predicted = g.predict(HELD_OUT, role="held-out", cases=held_out.cases, trained=trained, one_pass=False)
    p = _scored(g, HELD_OUT, role="held-out", cases=held_out.cases, predicted=predicted)
    rows = json.loads((p.scored.path / "rows.json").read_text())
    volumes = g.volumes(p)
    if cfg.detector is not None:
        images = {f"{c.patient}_{c.phase}": c.image for c in [*data.cases, *held_out.cases]}
        detected = g.detect(HELD_OUT, fit=[cv.tested[k] for k in cfg.folds], test=p, images=images)
        with np.load(detected.path / "probs.npz") as z:
            volumes = [replace(v, patch_probs=z[f"{v.patient}_{v.phase}"]) for v in volumes]
    reliability = sum_counts(stages.read_calibration(p.scored.path))
    measured = aggregate.measure(rows=rows, volumes=volumes, reliability=reliability, protocol=cfg.protocol,
                                 params=cfg.preprocess)
    out = cfg.out / "test"
    outdir.export_nifti(out / "nifti", cfg.uncertainty, p)
    aggregate.write_tables(out, measured, protocol=cfg.protocol)
    return HeldOut.of(measured.results, dataset=DatasetInfo(name=cfg.dataset, root=str(held_out.root),
                                                            fingerprint=held_out.fingerprint, phantom=False))
