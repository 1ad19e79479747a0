"""The run: per fold, train -> MC inference -> maps -> largest component -> original geometry -> score;
then, out of fold, fit the failure detector, flag patches, simulate correction and score again.

This is the one module that knows the stage order. Every finished fold is written to ``OUT/foldK``
before the next starts, so an interrupted run resumes where it stopped and loses nothing finished.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import uqbench
from uqbench import evaluation
from uqbench.api import CLASS_NAMES, Context, DetectorExample, Segmenter, context_of
from uqbench.config import RunConfig
from uqbench.data import cache, nifti, phantom
from uqbench.data.preprocess import PreprocessParams, labels_to_original, map_to_original
from uqbench.devices import machine
from uqbench.errors import DataError, MethodFault, PluginError, UsageError
from uqbench.evaluation import Volume
from uqbench.files import write_atomic
from uqbench.infer.postprocess import finalise
from uqbench.kinds import DATASET, DETECTOR, LOSS, SEGMENTER, UNCERTAINTY, Kind, kind
from uqbench.protocol import calibration
from uqbench.protocol import failures as failure_rules
from uqbench.protocol.detection import DetectorTraining, check_patch_probabilities, correct, voxels_per_patch
from uqbench.protocol.patches import expand
from uqbench.records import from_json, write_json
from uqbench.registry import registry
from uqbench.results import summary as summaries
from uqbench.results import tables
from uqbench.results.summary import METRICS, DatasetInfo, Provenance, Summary

NIFTI_QUANTUM = 1e-3  # probabilities and maps are written in steps of 0.001 (see nifti.write)
PHANTOM_PATIENTS = 20
PHANTOM_SEED = 0


class Progress(Protocol):
    """The part of rich's Progress the pipeline uses (the CLI passes one in; tests may pass None)."""

    def add_task(self, description: str, *, total: float | None = ...) -> Any: ...

    def advance(self, task_id: Any, advance: float = ...) -> None: ...


def _tracker(progress: Progress | None, description: str, total: int) -> Callable[[int], None]:
    """An ``advance(n)`` callback whose bar appears on first use, so a stage served from cache shows none."""
    if progress is None:
        return lambda n: None
    task = None

    def advance(n: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task(description, total=total)
        progress.advance(task, n)

    return advance


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


def _check_out(cfg: RunConfig) -> Path:
    out = cfg.out
    path = out / "config.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as exc:
            raise DataError(f"{path}: not a uqbench run configuration ({exc}); delete that folder or choose "
                            "another --out") from None
        new = json.loads(json.dumps(cfg.identity()))  # as it would read back from config.json
        diff = [k for k in new if old.get(k) != new[k]]
        if diff:
            raise UsageError(f"--out {out}: holds a run with other settings ({', '.join(diff)}); "
                             "choose another --out or delete that folder")
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, cfg.record() | {"uqbench": uqbench.__version__, "python": platform.python_version(),
                                      "machine": machine(cfg.device)})
    return out


def run(cfg: RunConfig, progress: Progress | None = None) -> Summary:
    """Execute a resolved run and return its summary (also written to OUT/summary.json)."""
    # The torch stages are imported here, once, not on first use: a run that lasts hours then keeps the code
    # it started with even if the installation changes under it.
    import torch

    from uqbench.infer.mc import predict_volume
    from uqbench.train.loop import train

    torch.set_flush_denormal(True)  # denormal floats slow CPU training several-fold
    reg = registry()
    params = cfg.preprocess
    root = Path(cfg.data) if cfg.data else phantom_root(advance=_tracker(progress, "phantom", PHANTOM_PATIENTS))
    ds = reg.create(DATASET, cfg.dataset, root)
    problems = _plugin_call(cfg, DATASET, ds.problems, where="checking the data")
    if problems:
        more = f" (and {len(problems) - 1} more; run `uqbench data check {root}`)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    fold_of = dict(ds.folds())
    for k in cfg.folds:  # before anything is written, so a refused run leaves nothing behind
        if k not in fold_of.values():
            raise UsageError(f"--folds: fold {k} has no patients in {root}")
        if set(fold_of.values()) == {k}:
            raise UsageError(f"--folds: fold {k} leaves no training patients in {root}")
    fingerprint = _plugin_call(cfg, DATASET, ds.fingerprint, where="reading the data")
    out = _check_out(cfg)
    folder, entries = cache.prepare(ds, params=params, fingerprint=fingerprint,
                                    advance=_tracker(progress, "prepare", 2 * len(fold_of)))
    cases = cache.load(folder, entries, params=params, advance=_tracker(progress, "load", len(entries)))
    seg = reg.create(SEGMENTER, cfg.segmenter)
    umap = reg.create(UNCERTAINTY, cfg.uncertainty)
    loss = reg.create(LOSS, cfg.loss)
    recipe = cfg.recipe
    timings: dict[str, float] = {}
    volumes: list[Volume] = []
    rows: list[dict[str, Any]] = []
    calib = np.zeros((len(CLASS_NAMES), calibration.BINS, 3))
    brier, voxels = 0.0, 0
    protocol = cfg.protocol
    in_sample = cfg.detector is not None and protocol.detector_training == "in-sample"
    training: dict[int, list[Volume]] = {}  # in-sample: fold k's predictions of its own training patients
    for k in cfg.folds:
        fdir = out / f"fold{k}"
        fdir.mkdir(exist_ok=True)
        done = fdir / "results.json"
        test = [c for c in cases if fold_of[c.patient] == k]
        if not done.is_file():
            train_slices = [(c.image[z], c.labels[z]) for c in cases if fold_of[c.patient] != k
                            for z in range(c.image.shape[0])]
            t0 = time.perf_counter()
            model = _plugin_call(cfg, SEGMENTER, train, where=f"training, fold {k}", segmenter=seg, recipe=recipe,
                                 loss=_Attributed(cfg, LOSS, loss, where=f"training, fold {k}"), slices=train_slices,
                                 device=cfg.device, seed=cfg.seed + k, checkpoint=fdir / "checkpoint.pt",
                                 advance=_tracker(progress, f"fold {k} train", recipe.iterations),
                                 precision=cfg.precision)
            t1 = time.perf_counter()
            fold_rows, arrays, fold_calib = _infer_fold(cfg, predict=predict_volume, model=model, umap=umap,
                                                        seg=seg, test=test, fold=k,
                                                        advance=_tracker(progress, f"fold {k} infer", len(test)))
            t2 = time.perf_counter()
            if in_sample:  # what this fold's detector will learn from
                own = [c for c in cases if fold_of[c.patient] != k]
                _write_npz(fdir / "training.npz", _predict_training(
                    cfg, predict=predict_volume, model=model, umap=umap, seg=seg, cases=own, fold=k,
                    advance=_tracker(progress, f"fold {k} own", len(own))))
            _write_npz(fdir / "predictions.npz", arrays)
            write_json(done, {"rows": fold_rows, "calibration": fold_calib, "train_s": t1 - t0,
                               "infer_s": t2 - t1, "device": cfg.device, "torch": torch.__version__})
        result = json.loads(done.read_text())
        rows += result["rows"]
        calib += np.asarray(result["calibration"]["counts"])
        brier += result["calibration"]["brier_sum"]
        voxels += result["calibration"]["voxels"]
        timings[f"fold{k}_train_s"] = result["train_s"]
        timings[f"fold{k}_infer_s"] = result["infer_s"]
        with np.load(fdir / "predictions.npz") as z:
            volumes += [_volume(c, k, z) for c in test]
        if in_sample:
            with np.load(fdir / "training.npz") as z:
                training[k] = [_volume(c, k, z) for c in cases if fold_of[c.patient] != k]
    detection_rows: list[dict[str, Any]] = []
    notes: list[str] = []
    risk_coverage = evaluation.risk_coverage_summary(volumes, protocol.risk)
    calibration_summary = evaluation.calibration_summary(calib, brier, voxels)
    curves = effort = significance = None
    if cfg.detector and (in_sample or len(cfg.folds) > 1):
        volumes = _detect(cfg, volumes, training=training, images={f"{c.patient}_{c.phase}": c.image for c in cases},
                          progress=progress)
        detection_rows = _correct(cfg, volumes, rows)
        t0 = time.perf_counter()
        curves = evaluation.detection_summary(volumes, protocol)
        effort = evaluation.effort_curve(volumes, to_original=_to_original(params), protocol=protocol)
        significance = evaluation.significance(rows, protocol)
        timings["effort_curve_s"] = time.perf_counter() - t0
    elif cfg.detector:
        notes.append(f"detector '{cfg.detector}' not run: it is fitted out of fold, which needs 2 or more --folds "
                     "(or --detector-training in-sample)")
    corrected_rows = [r for r in rows if "dice_corrected" in r]
    empty_reference, empty_prediction = tables.empty_counts(rows)
    summary = Summary(
        segmentation=tables.scores(rows),
        corrected=tables.scores(corrected_rows, corrected=True) if corrected_rows else None,
        empty_reference=empty_reference, empty_prediction=empty_prediction,
        detection=tables.detection_totals(detection_rows) if detection_rows else None,
        risk_coverage=risk_coverage, calibration=calibration_summary, detection_curves=curves,
        correction_effort=effort, significance=significance,
        clinical=evaluation.clinical_summary(rows, density=protocol.myocardial_density),
        clinical_corrected=evaluation.clinical_summary(rows, "predicted_ml_corrected",
                                                       density=protocol.myocardial_density) if corrected_rows else None,
        profile=cfg.profile.value, device=cfg.device, timings_s=timings, notes=notes,
        protocol=protocol,
        dataset=DatasetInfo(name=cfg.dataset, root=str(root), fingerprint=fingerprint, phantom=cfg.data is None),
        provenance=_provenance(cfg))
    tag = {"protocol": f"{protocol.label} {protocol.digest()}"}  # every table names the preset that made it
    tables.write_csv(out / "cases.csv", [r | tag for r in rows])
    if detection_rows:
        tables.write_csv(out / "detection.csv", [r | tag for r in detection_rows])
    summaries.write(out / "summary.json", summary)
    return summary


def _provenance(cfg: RunConfig) -> Provenance:
    """Where each method of the run came from (distribution, version), and which distributions could load."""
    provenance: Provenance = from_json(Provenance, registry().provenance(cfg.methods()), "provenance")
    return provenance


def _to_original(params: PreprocessParams) -> evaluation.ToOriginal:
    def to_original(v: Volume, labels: np.ndarray) -> np.ndarray:
        return labels_to_original(labels, original_shape=v.reference.shape, spacing=v.spacing, target=params.spacing)

    return to_original


def _volume(c: cache.Prepared, fold: int, arrays: Any) -> Volume:
    key = f"{c.patient}_{c.phase}"
    return Volume(patient=c.patient, phase=c.phase, group=c.group, fold=fold, spacing=c.spacing,
                  reference=c.original_labels, reference_grid=c.labels, prediction_grid=arrays[f"{key}_labels"],
                  uncertainty=arrays[f"{key}_uncertainty"], failures=arrays[f"{key}_failures"])


class _Attributed:
    """A plugin object handed to harness code: errors raised in its calls name it, not the caller's plugin
    (a failing loss inside training is the loss's fault, not the segmenter's)."""

    def __init__(self, cfg: RunConfig, of: Kind[Any], obj: Callable[..., Any], *, where: str) -> None:
        self.cfg, self.kind, self.obj, self.where = cfg, of, obj, where

    def __call__(self, *args: Any) -> Any:
        return _plugin_call(self.cfg, self.kind, self.obj, *args, where=self.where)


@contextmanager
def _blame(cfg: RunConfig, of: Kind[Any], where: str) -> Iterator[None]:
    """Code run inside is a method of kind ``of`` at work in stage ``where``: its unexpected exception, or a
    MethodFault the harness raised on a method's output, becomes a PluginError naming that method, its
    distribution and version, the stage and the case."""
    try:
        yield
    except MethodFault as exc:
        raise _fault(cfg, kind(exc.kind), where=where, detail=exc.detail) from exc
    except (UsageError, DataError, PluginError, KeyboardInterrupt, OSError):
        raise
    except Exception as exc:
        raise _fault(cfg, of, where=where, detail=f"{type(exc).__name__}: {exc}") from exc


def _fault(cfg: RunConfig, of: Kind[Any], *, where: str, detail: str) -> PluginError:
    return registry().fault(of, str(cfg.method(of)), f"failed in {where}: {detail}")


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Compressed arrays, written atomically (read back only after the fold's results.json says it is done)."""
    def write(tmp: Path) -> None:
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]  # the stub lets **dict reach allow_pickle

    write_atomic(path, write, part=".part.npz")


def _plugin_call(cfg: RunConfig, of: Kind[Any], fn: Callable[..., Any], *args: Any, where: str, **kwargs: Any
                 ) -> Any:
    """Call into a plugin of kind ``of`` during stage ``where``, blamed as in :func:`_blame`."""
    with _blame(cfg, of, where):
        return fn(*args, **kwargs)


def _infer_fold(cfg: RunConfig, *, predict: Callable[..., tuple[np.ndarray, np.ndarray]], model: Any, umap: Any,
                seg: Segmenter, test: list[cache.Prepared], fold: int, advance: Callable[[int], None]
                ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, Any]]:
    """Predict (with ``uqbench.infer.mc.predict_volume``), post-process, score and label failures of every
    test case; sum calibration counts."""
    params = cfg.preprocess
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    counts = np.zeros((len(CLASS_NAMES), calibration.BINS, 3))
    brier, voxels = 0.0, 0
    for i, c in enumerate(test):
        probs, unc = _predict_case(cfg, predict=predict, model=model, umap=umap, seg=seg, c=c,
                                   fold=fold, seed=cfg.seed * 100_003 + fold * 1000 + i)
        n, b, v = calibration.reliability_counts(probs, c.labels, f"{c.patient} {c.phase}")
        counts, brier, voxels = counts + n, brier + b, voxels + v
        labels = finalise(probs.transpose(1, 0, 2, 3))  # the mean softmax [Z, C, Y, X]
        original = labels_to_original(labels, original_shape=c.original_labels.shape, spacing=c.spacing,
                                      target=params.spacing)
        key = f"{c.patient}_{c.phase}"
        _write_nifti(cfg.out / f"fold{fold}" / "nifti" / key, c, labels=original, probs=probs, unc=unc,
                     uncertainty=cfg.uncertainty, params=params)
        _keep(cfg, arrays, case=c, labels=labels, unc=unc)
        rows += evaluation.case_rows(_volume(c, fold, arrays), original)
        advance(1)
    return rows, arrays, {"counts": counts.tolist(), "brier_sum": brier, "voxels": voxels}


def _keep(cfg: RunConfig, arrays: dict[str, np.ndarray], *, case: cache.Prepared, labels: np.ndarray,
          unc: np.ndarray) -> None:
    """Add a case's grid labels, map (float16) and failure labels to the arrays a fold stores."""
    key = f"{case.patient}_{case.phase}"
    arrays[f"{key}_labels"], arrays[f"{key}_uncertainty"] = labels, unc.astype(np.float16)
    arrays[f"{key}_failures"] = failure_rules.failure_map(labels, case.labels, rule=cfg.protocol.failure_rule,
                                                          spacing=cfg.preprocess.spacing)


def _predict_case(cfg: RunConfig, *, predict: Callable[..., tuple[np.ndarray, np.ndarray]], model: Any, umap: Any,
                  seg: Segmenter, c: cache.Prepared, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean softmax [C, Z, Y, X], uncertainty [Z, Y, X]) of case ``c``, each checked where it is produced."""
    with _blame(cfg, SEGMENTER, f"inference, fold {fold}, {c.patient} {c.phase}"):
        mean, unc = predict(model, c.image, umap=umap, samples=cfg.samples, multiple=seg.size_multiple,
                            device=cfg.device, seed=seed, precision=cfg.precision, context=context_of(seg))
    if not np.isfinite(unc).all() or unc.min() < 0 or unc.max() > 1:
        raise PluginError(f"uncertainty map '{cfg.uncertainty}' returned values outside [0, 1] or NaN "
                          f"for {c.patient} {c.phase}")
    probs = mean.transpose(1, 0, 2, 3)  # [C, Z, Y, X]
    try:
        calibration.check_probabilities(probs, f"{c.patient} {c.phase}")
    except ValueError as exc:
        raise PluginError(f"segmenter '{cfg.segmenter}' gave bad softmax output: {exc}") from None
    return probs, unc


def _predict_training(cfg: RunConfig, *, predict: Callable[..., tuple[np.ndarray, np.ndarray]], model: Any,
                      umap: Any, seg: Segmenter, cases: list[cache.Prepared], fold: int,
                      advance: Callable[[int], None]) -> dict[str, np.ndarray]:
    """In-sample detector data: fold ``fold``'s segmenter on its own training ``cases`` (T samples as for the
    test patients), with the labels, map and failure labels a detector learns from; nothing is scored."""
    arrays: dict[str, np.ndarray] = {}
    for i, c in enumerate(cases):
        probs, unc = _predict_case(cfg, predict=predict, model=model, umap=umap, seg=seg, c=c,
                                   fold=fold, seed=cfg.seed * 100_003 + fold * 1000 + 500 + i)
        _keep(cfg, arrays, case=c, labels=finalise(probs.transpose(1, 0, 2, 3)), unc=unc)
        advance(1)
    return arrays


def _write_nifti(stem: Path, c: cache.Prepared, *, labels: np.ndarray, probs: np.ndarray, unc: np.ndarray,
                 uncertainty: str, params: PreprocessParams) -> None:
    """The case's label map, mean probabilities [4-D, classes last] and uncertainty map in original geometry,
    with the source's header (zooms, qform, sform) when the reader gave it, else its affine."""
    shape = c.original_labels.shape
    nifti.write(stem.with_name(f"{stem.name}_labels.nii.gz"), labels.astype(np.uint8), c.affine, header=c.header)
    nifti.write(stem.with_name(f"{stem.name}_probs.nii.gz"),
                map_to_original(probs, original_shape=shape, spacing=c.spacing, target=params.spacing), c.affine,
                header=c.header, quantum=NIFTI_QUANTUM)
    nifti.write(stem.with_name(f"{stem.name}_{uncertainty.replace(':', '_')}.nii.gz"),
                map_to_original(unc, original_shape=shape, spacing=c.spacing, target=params.spacing), c.affine,
                header=c.header, quantum=NIFTI_QUANTUM)


def _detect(cfg: RunConfig, volumes: list[Volume], *, training: dict[int, list[Volume]],
            images: dict[str, np.ndarray], progress: Progress | None) -> list[Volume]:
    """Fold k's detector learns from ``fit_set`` (its own training patients in-sample, the other folds' test
    predictions out of fold), then scores fold k's patches. Its state and probabilities are kept in
    OUT/foldK/detector/; a fitted state is loaded, not refitted."""
    assert cfg.detector is not None
    reg = registry()

    def examples(v: Volume, with_failures: bool) -> list[DetectorExample]:
        image = images[f"{v.patient}_{v.phase}"]
        return [DetectorExample(image=image[z], uncertainty=v.uncertainty[z].astype(np.float32),
                                segmentation=v.prediction_grid[z], failures=v.failures[z] if with_failures else None)
                for z in range(v.prediction_grid.shape[0])]

    out: list[Volume] = []
    advance = _tracker(progress, "detect", len(cfg.folds))
    for k in cfg.folds:
        det = reg.create(DETECTOR, cfg.detector)
        fdir = cfg.out / f"fold{k}"
        train_ex = [ex for v in fit_set(cfg.protocol.detector_training, k, tested=volumes, training=training)
                    for ex in examples(v, True)]
        ctx = Context(profile=cfg.profile, device=cfg.device, seed=cfg.seed + k, workdir=fdir / "detector")
        ctx.workdir.mkdir(exist_ok=True)
        state = ctx.workdir / "state"
        if state.is_file():  # fitted before this run was interrupted
            _plugin_call(cfg, DETECTOR, det.load, state, where=f"loading the detector of fold {k}")
        else:
            _plugin_call(cfg, DETECTOR, det.fit, train_ex, ctx, where=f"fitting the detector of fold {k}")
            _plugin_call(cfg, DETECTOR, det.save, state.with_name("state.part"),
                         where=f"saving the detector of fold {k}")
            state.with_name("state.part").replace(state)
        probs: dict[str, np.ndarray] = {}
        for v in volumes:
            if v.fold != k:
                continue
            p = np.stack([_plugin_call(cfg, DETECTOR, det.predict, ex, where=f"detection, fold {k}, {v.where}")
                          for ex in examples(v, False)])
            try:
                check_patch_probabilities(p, v.prediction_grid.shape, v.where)
            except ValueError as exc:
                raise PluginError(f"detector '{cfg.detector}': {exc}") from None
            probs[f"{v.patient}_{v.phase}"] = p.astype(np.float32)
            out.append(replace(v, patch_probs=p))
        _write_npz(ctx.workdir / "probs.npz", probs)
        advance(1)
    return out


def fit_set(mode: DetectorTraining, fold: int, *, tested: list[Volume], training: dict[int, list[Volume]]
            ) -> list[Volume]:
    """The predictions fold ``fold``'s detector learns from (see uqbench.protocol.detection.DetectorTraining)."""
    if mode == "in-sample":
        return training[fold]
    return [v for v in tested if v.fold != fold]


def _correct(cfg: RunConfig, volumes: list[Volume], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Simulated correction of the patches flagged at the protocol's operating point (p > 0.5, or >= 0.5);
    corrected metrics join ``rows``, and one detection row per volume is returned."""
    corrected: dict[tuple[str, str, str], dict[str, Any]] = {}
    detection_rows = []
    to_original = _to_original(cfg.preprocess)
    for v in volumes:
        assert v.patch_probs is not None
        flags = cfg.protocol.flagged(v.patch_probs, cfg.protocol.operating_point)
        fixed = correct(v.prediction_grid, v.reference_grid, flags, mode=cfg.protocol.correction, failures=v.failures)
        for r in evaluation.case_rows(v, to_original(v, fixed)):
            corrected[(v.patient, v.phase, r["class"])] = r
        fail_patches = voxels_per_patch(v.failures) > 0
        mask = np.stack([expand(f, v.failures.shape[1:]) for f in flags])
        detection_rows.append({
            "patient": v.patient, "phase": v.phase, "fold": v.fold, "slices": int(v.failures.shape[0]),
            "failure_slices": int(v.failures.any((1, 2)).sum()),
            "failure_voxels": int(v.failures.sum()), "detected_failure_voxels": int((v.failures & mask).sum()),
            "failure_patches": int(fail_patches.sum()), "flagged_patches": int(flags.sum()),
            "true_positive_patches": int((fail_patches & flags).sum())})
    for r in rows:
        fixed_row = corrected.get((r["patient"], r["phase"], r["class"]))
        if fixed_row:
            for metric in (*METRICS, "predicted_voxels", "predicted_ml"):
                r[f"{metric}_corrected"] = fixed_row[metric]
    return detection_rows
