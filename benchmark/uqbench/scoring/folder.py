"""A folder of predictions scored (``uqbench evaluate``): segmentations made elsewhere (nnU-Net's above all, or a
run's own ``OUT/nifti/``) scored with the run's protocol, nothing retrained.

The data are read as a run reads them (the registered reader, the prepared cache); each case's files are read
and checked by ``uqbench.scoring.files`` and scored by ``uqbench.scoring.case.score_case``; the results end in
``uqbench.scoring.aggregate.measure``, as a run's do. A run's own files therefore give the run's numbers.

Detectors: ``oracle`` flags exactly the patches that hold failure voxels, the ceiling of simulated correction (a
reference of the protocol, not a method, so it is no plugin); a registered detector is fitted for each fold on
the other folds' cases and scores that fold's, as the run's default out-of-fold protocol does.
"""

from __future__ import annotations

import platform
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import uqbench
from uqbench.api import PHASES, Context, Profile
from uqbench.calls import Blamer
from uqbench.config import EvaluationConfig
from uqbench.data import cache
from uqbench.data.prepare import checked, prepared
from uqbench.data.preprocess import PreprocessParams
from uqbench.errors import UsageError
from uqbench.kinds import DATASET, DETECTOR, UNCERTAINTY
from uqbench.progress import Progress, overall, tracker
from uqbench.protocol import calibration
from uqbench.protocol.detection import voxels_per_patch
from uqbench.protocol.presets import Preset
from uqbench.records import write_json
from uqbench.registry import registry
from uqbench.results import summary as summaries
from uqbench.results.summary import DatasetInfo, HeldOut, Provenance, Summary
from uqbench.run import outdir, stages
from uqbench.run.provenance import provenance
from uqbench.run.seeds import HELD_OUT, stream_seed
from uqbench.scoring import aggregate
from uqbench.scoring import files as read
from uqbench.scoring.case import CalibrationCounts, Volume, geometry, score_case, sum_counts

ORACLE = "oracle"
NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
PROBABILITY_ENDINGS = (".npz", ".nii.gz", ".nii")


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What ``uqbench evaluate`` was asked to score, checked by :func:`check`."""

    name: str  # the method that made the predictions, as a board shows it (e.g. nnunet-3d_fullres)
    predictions: Path
    data: Path
    dataset: str
    folds: tuple[int, ...] | None  # the folds whose cases are scored; None: every case of the data
    probabilities: Path | None
    uncertainty_maps: Path | None
    uncertainty: str | None  # a map computed from the probabilities
    detector: str | None  # ORACLE or a registered detector
    protocol: Preset
    profile: Profile
    device: str
    seed: int
    out: Path

    def config(self) -> EvaluationConfig:
        """config.json of an evaluation: every option, paths absolute."""
        return EvaluationConfig(
            name=self.name, predictions=str(self.predictions.resolve()), data=str(self.data.resolve()),
            dataset=self.dataset, folds=list(self.folds) if self.folds is not None else None,
            probabilities=str(self.probabilities.resolve()) if self.probabilities else None,
            uncertainty_maps=str(self.uncertainty_maps.resolve()) if self.uncertainty_maps else None,
            uncertainty=self.uncertainty, detector=self.detector, protocol=self.protocol.label,
            protocol_hash=self.protocol.digest(), profile=self.profile.value, seed=self.seed,
            uqbench=uqbench.__version__, python=platform.python_version())

    def blamer(self) -> Blamer:
        """Blames a fault on the methods this evaluation runs."""
        return Blamer({DATASET.name: self.dataset, DETECTOR.name: self.detector, UNCERTAINTY.name: self.uncertainty})


def check(req: Request) -> None:
    """UsageError naming the option that cannot work, before anything is read."""
    if not NAME.fullmatch(req.name):
        raise UsageError(f"--name {req.name!r}: letters, digits and . _ - only, at most 64, starting with a letter")
    for option, folder in (("--predictions", req.predictions), ("--data", req.data),
                           ("--probabilities", req.probabilities), ("--uncertainty-maps", req.uncertainty_maps)):
        if folder is not None and not folder.is_dir():
            raise UsageError(f"{option} {folder}: not a folder")
    if req.uncertainty is not None:
        if req.uncertainty_maps is not None:
            raise UsageError("--uncertainty computes a map from --probabilities; --uncertainty-maps gives one: "
                             "choose one")
        if req.probabilities is None:
            raise UsageError(f"--uncertainty {req.uncertainty}: computes the map from the mean softmax, which needs "
                             "--probabilities")
        from uqbench.infer.maps import reads_mean_only

        umap = registry().create(UNCERTAINTY, req.uncertainty)
        if not reads_mean_only(umap):
            raise UsageError(f"--uncertainty {req.uncertainty}: this map reads the spread of {umap.samples} MC "
                             "samples; from saved probabilities only a map of the mean softmax can be computed "
                             "(e.g. emap, maxprob)")
    registry().entry(DATASET, req.dataset.split(":")[0])
    if req.detector not in (None, ORACLE):
        registry().create(DETECTOR, req.detector)
        if req.uncertainty_maps is None and req.uncertainty is None:
            raise UsageError(f"--detector {req.detector}: a detector reads an uncertainty map; give "
                             "--uncertainty-maps, or --probabilities with --uncertainty")
        if req.protocol.detector_training != "out-of-fold":
            raise UsageError(f"--detector {req.detector}: protocol {req.protocol.label} fits detectors on each "
                             "fold's own training patients' predictions (detector training in-sample), which a folder "
                             "of predictions does not hold; add --detector-training out-of-fold (evaluate fits "
                             "each fold's detector on the other folds' cases)")
    _check_out(req)


def _check_out(req: Request) -> None:
    """UsageError unless --out can take an evaluation: a folder (or nothing yet), never one holding a run."""
    if req.out.exists() and not req.out.is_dir():
        raise UsageError(f"--out {req.out}: is a file, not a folder")
    old = outdir.read_config(req.out)
    if old is not None and old.get("command") != "evaluate":
        raise UsageError(f"--out {req.out}: holds a run (its config.json); choose another --out, an evaluation "
                         "never writes over a run")


def evaluate(req: Request, progress: Progress | None = None) -> Summary:
    """Score the files of ``req`` and write OUT/config.json, cases.csv, detection.csv (with a detector) and
    summary.json; the summary comes back. OUT is locked while it is written, and never one holding a run."""
    t_start = time.perf_counter()
    check(req)
    params = PreprocessParams()
    cases, fold_of, fingerprint = _prepared(req, params, progress)
    # files of the data's other cases (folds left out by --folds) are known, not strangers
    every = sorted({(c.patient, c.phase) for c in cases} | {(p, phase) for p in fold_of for phase in PHASES})
    # fold by fold, as a run orders its rows: sums then add in the same order and give the same last bits
    cases = sorted(cases, key=lambda c: (c.patient not in fold_of, fold_of.get(c.patient, 0)))
    keys = [(c.patient, c.phase) for c in cases]
    labels = _found(req.predictions, keys, every, what="label maps")
    probs = _found(req.probabilities, keys, every, what="probabilities", endings=PROBABILITY_ENDINGS)
    maps = _found(req.uncertainty_maps, keys, every, what="uncertainty maps")
    # As a run keeps --test-data apart: patients without a fold beside cross-validation patients are a test set,
    # measured on their own into summary.test and OUT/test/; a --data of test patients only is measured as it is.
    cross_validated = any(c.patient in fold_of for c in cases)
    held_out = {c.patient for c in cases if c.patient not in fold_of} if cross_validated else set()
    advance = overall(progress, "cases scored", len(cases))
    umap = None if req.uncertainty is None else registry().create(UNCERTAINTY, req.uncertainty)
    rows: list[dict[str, Any]] = []
    volumes: list[Volume] = []
    counts: dict[bool, list[CalibrationCounts]] = {False: [], True: []}  # per part (held out or not), per case
    for c in cases:
        key, geo = (c.patient, c.phase), geometry(c)
        p = read.read_probabilities(probs[key], geo) if probs else None
        unc = None
        if maps:
            unc = read.read_map(maps[key], geo)
        elif p is not None and umap is not None:
            unc = _map_of(req, umap, p, where=geo.where)
        written = read.read_labels(labels[key], geo)
        scored = score_case(c, fold=fold_of.get(c.patient, HELD_OUT), labels=written, probabilities=p,
                            uncertainty=unc, rule=req.protocol.failure_rule, params=params)
        rows += scored.rows
        volumes.append(scored.volume)
        if scored.calibration is not None:
            counts[c.patient in held_out].append(scored.calibration)
        advance(1)
    if req.detector == ORACLE:
        volumes = [replace(v, patch_probs=(voxels_per_patch(v.failures) > 0).astype(np.float32)) for v in volumes]
    elif req.detector is not None:
        volumes = _detected(req, volumes, {f"{c.patient}_{c.phase}": c.image for c in cases}, progress=progress)
    measured = {part: aggregate.measure(rows=[r for r in rows if (r["patient"] in held_out) == part],
                                        volumes=[v for v in volumes if (v.patient in held_out) == part],
                                        reliability=sum_counts(counts[part]), protocol=req.protocol, params=params)
                for part in ((False, True) if held_out else (False,))}
    info = DatasetInfo(name=req.dataset, root=str(req.data.resolve()), fingerprint=fingerprint, phantom=False)
    summary = Summary.of(
        measured[False].results, profile=req.profile.value, device=req.device,
        timings_s=measured[False].timings_s | {"run_s": time.perf_counter() - t_start}, notes=[],
        protocol=req.protocol, stages=[], dataset=info, provenance=_provenance(req, fold_of),
        test=HeldOut.of(measured[True].results, dataset=info) if held_out else None)
    with outdir.out_lock(req.out, command="uqbench evaluate"):
        _check_out(req)  # another command may have written a run there meanwhile
        write_json(req.out / "config.json", req.config().record())
        for part, folder in ((False, req.out), (True, req.out / "test")):
            if part in measured:
                folder.mkdir(parents=True, exist_ok=True)
                aggregate.write_tables(folder, measured[part], protocol=req.protocol)
        summaries.write(req.out / "summary.json", summary)
    return summary


def _prepared(req: Request, params: PreprocessParams, progress: Progress | None
              ) -> tuple[list[cache.Prepared], dict[str, int], str]:
    """The cases to score on both grids (the cache a run prepares; only those of ``--folds`` and the test patients
    are loaded), the data's folds (absent for held-out patients) and its fingerprint."""
    ds = registry().create(DATASET, req.dataset, req.data)
    blamer = req.blamer()
    call: Callable[[Callable[[], Any], str], Any] = lambda fn, where: blamer.call(DATASET, fn, where=where)
    fingerprint = checked(ds, root=req.data, params=params, call=call)
    fold_of = dict(call(ds.folds, "reading the folds"))
    if req.folds is not None:
        missing = sorted(set(req.folds) - set(fold_of.values()))
        if missing:
            raise UsageError(f"--folds: fold {missing[0]} has no patients in {req.data}")
    folds = req.folds
    made = prepared(ds, root=req.data, params=params, fingerprint=fingerprint,
                    tracker=lambda what, total: tracker(progress, what, total), expected=2 * len(fold_of),
                    patients=lambda p: folds is None or p not in fold_of or fold_of[p] in folds)
    return made.cases, fold_of, made.fingerprint


def _found(folder: Path | None, keys: list[tuple[str, str]], every: list[tuple[str, str]], *, what: str,
           endings: tuple[str, ...] = read.ENDINGS) -> dict[tuple[str, str], Path]:
    """The files of ``keys`` in ``folder``; DataError naming the missing cases, and files of cases the data do
    not hold (files of cases outside ``--folds``, in ``every``, are left alone)."""
    if folder is None:
        return {}
    found = read.files(folder, what=what, endings=endings)
    read.check_complete(found, keys, folder=folder, what=what, known=every)
    return found


def _map_of(req: Request, umap: Any, probs: np.ndarray, *, where: str) -> np.ndarray:
    """The ``--uncertainty`` map ``umap`` of class probabilities [C, Z, Y, X] (one pass: variance 0)."""
    import torch

    from uqbench.infer.maps import as_moments, map_of

    moments = as_moments({"mean": np.ascontiguousarray(probs.transpose(1, 0, 2, 3), dtype=np.float32)}, 1)
    blamer = req.blamer()
    with blamer.blame(UNCERTAINTY, f"computing the map of {where}"):
        values = map_of(umap, moments=moments)
    out: np.ndarray = torch.as_tensor(values).float().numpy()
    try:
        calibration.check_map(out, where)
    except ValueError as exc:
        raise blamer.fault(UNCERTAINTY, where=f"computing the map of {where}", detail=f"a bad map: {exc}") from None
    return out


def _detected(req: Request, volumes: list[Volume], images: dict[str, np.ndarray], *, progress: Progress | None
              ) -> list[Volume]:
    """``volumes`` with patch probabilities from the detector of each fold, fitted on the other folds' volumes."""
    spec = req.detector or ""
    folds = sorted({v.fold for v in volumes if v.fold >= 0})
    if len(folds) < 2:
        raise UsageError(f"--detector {spec}: fitted out of fold, it needs cases of 2 or more folds in --data")

    blamer = req.blamer()

    def blame(fn: Callable[..., Any], *args: Any, where: str) -> Any:
        return blamer.call(DETECTOR, fn, *args, where=where)

    probs: dict[str, np.ndarray] = {}
    for k in sorted({v.fold for v in volumes}):
        fit = [(v, images[f"{v.patient}_{v.phase}"]) for v in volumes if v.fold >= 0 and v.fold != k]
        test = [(v, images[f"{v.patient}_{v.phase}"]) for v in volumes if v.fold == k]
        with tempfile.TemporaryDirectory(prefix="uqbench-detect-") as tmp:
            ctx = Context(profile=req.profile, device=req.device, seed=stream_seed(req.seed, k),
                          workdir=Path(tmp) / "workdir")
            stages.detect(Path(tmp), detector=registry().create(DETECTOR, spec), name=spec,
                          blame=lambda fn, *a, where, k=k: blame(fn, *a, where=f"{where} (fold {k})"),
                          fit=fit, test=test, context=ctx,
                          advance=tracker(progress, f"fold {k} detect" if k >= 0 else "test set detect", 1 + len(test)))
            with np.load(Path(tmp) / "probs.npz") as z:
                probs |= {name: z[name] for name in z.files}
    return [replace(v, patch_probs=probs[f"{v.patient}_{v.phase}"]) for v in volumes]


def _provenance(req: Request, fold_of: dict[str, int]) -> Provenance:
    """As a run's: the methods that ran here (the reader of the reference, a detector, a computed map),
    uqbench, torch and the machine."""
    used = {k: v for k, v in (("dataset", req.dataset), ("detector", req.detector), ("uncertainty", req.uncertainty))
            if v is not None and v != ORACLE}
    return provenance(methods=used, device=req.device, precision="fp32", seed=req.seed, fold_of=fold_of)
