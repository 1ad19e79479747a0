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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

import uqbench
from uqbench import evaluation
from uqbench.api import CLASS_NAMES, Context, DetectorExample, Profile, Recipe
from uqbench.data import cache, nifti, phantom
from uqbench.data.preprocess import PreprocessParams, labels_to_original, map_to_original
from uqbench.devices import resolve_device, resolve_precision
from uqbench.errors import DataError, PluginError, UsageError
from uqbench.evaluation import Volume
from uqbench.infer.postprocess import finalise
from uqbench.protocol import calibration
from uqbench.protocol import failures as failure_rules
from uqbench.protocol.detection import MODES, CorrectionMode, check_patch_probabilities, correct, voxels_per_patch
from uqbench.protocol.patches import expand
from uqbench.registry import registry
from uqbench.results import tables

NIFTI_QUANTUM = 1e-3  # probabilities and maps are written in steps of 0.001 (see nifti.write)
PHANTOM_PATIENTS = 20
PHANTOM_SEED = 0


class Progress(Protocol):
    """The part of rich's Progress the pipeline uses (the CLI passes one in; tests may pass None)."""

    def add_task(self, description: str, total: float | None = ...) -> Any: ...

    def advance(self, task_id: Any, advance: float = ...) -> None: ...


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Every setting of a run, resolved: what config.json records."""

    segmenter: str
    uncertainty: str
    detector: str | None
    loss: str
    data: str | None  # a dataset folder; None = the built-in phantom
    dataset: str
    folds: tuple[int, ...]
    profile: str
    samples: int
    device: str
    seed: int
    out: str
    recipe: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    failure_rule: dict[str, Any] = field(default_factory=dict)  # FailureRule.record(): parameters and hash
    correction: str = "patch"
    precision: str = "fp32"  # fp32 or bf16 autocast (uqbench.devices), resolved from --precision

    def identity(self) -> dict[str, Any]:
        """The settings that decide the results (a resumed run must match them)."""
        d = asdict(self)
        d.pop("out")
        return d


def resolve(segmenter: str, uncertainty: str, detector: str | None, loss: str | None, data: Path | None,
            dataset: str, folds: list[int], profile: str | None, samples: int | None, device: str, seed: int,
            out: Path | None, iterations: int | None = None, failure_preset: str = "paper",
            correction: str = "patch", precision: str = "auto") -> RunConfig:
    """Check every option against the registry and the machine; UsageError names the bad one."""
    reg = registry()
    seg = reg.create("segmenter", segmenter)
    umap = reg.create("uncertainty", uncertainty)
    if detector is not None:
        reg.create("detector", detector)  # its arguments are checked before any work
    reg.entry("dataset", dataset.split(":")[0])
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    try:
        prof = Profile(profile) if profile else (Profile.PAPER if dev == "cuda" else Profile.QUICK)
    except ValueError:
        raise UsageError(f"--profile {profile!r}: expected one of {', '.join(p.value for p in Profile)}") from None
    recipe = seg.recipe(prof)
    recipe = replace(recipe, loss=loss) if loss else recipe
    if iterations is not None:
        if iterations < 1:
            raise UsageError(f"--iterations {iterations}: must be at least 1")
        recipe = replace(recipe, iterations=iterations)
    reg.entry("loss", recipe.loss.split(":")[0])
    if samples is None:
        samples = umap.samples
    elif umap.samples == 1 and samples != 1:
        raise UsageError(f"--samples {samples}: uncertainty map '{uncertainty}' uses one deterministic pass")
    elif umap.samples > 1 and samples < 2:
        raise UsageError(f"--samples {samples}: uncertainty map '{uncertainty}' needs at least 2 MC samples")
    try:
        rule = failure_rules.preset(failure_preset)
    except ValueError as exc:
        raise UsageError(f"--failure-preset: {exc}") from None
    if correction not in MODES:
        raise UsageError(f"--correction {correction!r}: expected one of {', '.join(MODES)}")
    if data is not None and not data.is_dir():
        raise UsageError(f"--data {data}: not a folder")
    if not folds:
        raise UsageError("--folds: no fold given")
    source = "phantom" if data is None else data.name
    out = out or Path("runs") / f"{segmenter}-{uncertainty}-{source}-{prof.value}".replace(":", "_")
    return RunConfig(segmenter, uncertainty, detector, recipe.loss, None if data is None else str(data.resolve()),
                     dataset, tuple(folds), prof.value, samples, dev, seed, str(out), asdict(recipe),
                     asdict(PreprocessParams()), rule.record(), correction, prec)


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
        phantom.write_phantom(work, patients, seed, advance)
        (work / ".complete").write_text("")
        shutil.rmtree(root, ignore_errors=True)
        work.rename(root)
    return root


def _check_out(cfg: RunConfig) -> Path:
    out = Path(cfg.out)
    path = out / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        new = json.loads(json.dumps(cfg.identity()))  # as it would read back from config.json
        diff = [k for k in new if old.get(k) != new[k]]
        if diff:
            raise UsageError(f"--out {out}: holds a run with other settings ({', '.join(diff)}); "
                             "choose another --out or delete that folder")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, asdict(cfg) | {"uqbench": uqbench.__version__, "python": platform.python_version()})
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def run(cfg: RunConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Execute a resolved run and return its summary (also written to OUT/summary.json)."""
    # The torch stages are imported here, once, not on first use: a run that lasts hours then keeps the code
    # it started with even if the installation changes under it.
    import torch

    from uqbench.infer.mc import predict_volume
    from uqbench.train.loop import train

    torch.set_flush_denormal(True)  # denormal floats slow CPU training several-fold
    reg = registry()
    params = PreprocessParams(**cfg.preprocess)
    root = Path(cfg.data) if cfg.data else phantom_root(advance=_tracker(progress, "phantom", PHANTOM_PATIENTS))
    ds = reg.create("dataset", cfg.dataset, root)
    problems = _plugin_call(cfg, "dataset", ds.problems)
    if problems:
        more = f" (and {len(problems) - 1} more; run `uqbench data check {root}`)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    fold_of = dict(ds.folds())
    fingerprint = _plugin_call(cfg, "dataset", ds.fingerprint)
    out = _check_out(cfg)
    folder, entries = cache.prepare(ds, params, fingerprint,
                                    advance=_tracker(progress, "prepare", 2 * len(fold_of)))
    cases = cache.load(folder, entries, params, advance=_tracker(progress, "load", len(entries)))
    for k in cfg.folds:
        if not any(fold_of[c.patient] == k for c in cases):
            raise UsageError(f"--folds: fold {k} has no patients in {root}")
        if not any(fold_of[c.patient] != k for c in cases):
            raise UsageError(f"--folds: fold {k} leaves no training patients in {root}")
    seg = reg.create("segmenter", cfg.segmenter)
    umap = reg.create("uncertainty", cfg.uncertainty)
    loss = reg.create("loss", cfg.loss)
    recipe = Recipe(**cfg.recipe)
    rule = _rule(cfg)
    timings: dict[str, float] = {}
    volumes: list[Volume] = []
    rows: list[dict[str, Any]] = []
    calib = np.zeros((len(CLASS_NAMES), calibration.BINS, 3))
    brier, voxels = 0.0, 0
    for k in cfg.folds:
        fdir = out / f"fold{k}"
        fdir.mkdir(exist_ok=True)
        done = fdir / "results.json"
        test = [c for c in cases if fold_of[c.patient] == k]
        if not done.is_file():
            train_slices = [(c.image[z], c.labels[z]) for c in cases if fold_of[c.patient] != k
                            for z in range(c.image.shape[0])]
            t0 = time.perf_counter()
            model = _plugin_call(cfg, "segmenter", train, seg, recipe, _Attributed(cfg, "loss", loss), train_slices,
                                 cfg.device, cfg.seed + k, fdir / "checkpoint.pt",
                                 _tracker(progress, f"fold {k} train", recipe.iterations), False, cfg.precision)
            t1 = time.perf_counter()
            fold_rows, arrays, fold_calib = _infer_fold(cfg, predict_volume, model, umap, seg.size_multiple, test, k,
                                                        params, rule, _tracker(progress, f"fold {k} infer", len(test)))
            t2 = time.perf_counter()
            np.savez_compressed(fdir / "predictions.npz", **arrays)  # type: ignore[arg-type]
            _write_json(done, {"rows": fold_rows, "calibration": fold_calib, "train_s": t1 - t0,
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
    detection_rows: list[dict[str, Any]] = []
    notes: list[str] = []
    extra: dict[str, Any] = {"risk_coverage": evaluation.risk_coverage_summary(volumes),
                             "calibration": evaluation.calibration_summary(calib, brier, voxels)}
    if cfg.detector and len(cfg.folds) > 1:
        volumes = _detect(cfg, volumes, {f"{c.patient}_{c.phase}": c.image for c in cases}, progress)
        detection_rows = _correct(cfg, volumes, rows, params)
        t0 = time.perf_counter()
        extra |= {"detection_curves": evaluation.detection_summary(volumes),
                  "correction_effort": evaluation.effort_curve(volumes, _to_original(params),
                                                               cast(CorrectionMode, cfg.correction)),
                  "significance": evaluation.significance(rows)}
        timings["effort_curve_s"] = time.perf_counter() - t0
    elif cfg.detector:
        notes.append(f"detector '{cfg.detector}' not run: it is fitted out of fold, which needs 2 or more --folds")
    extra["clinical"] = evaluation.clinical_summary(rows)
    if any("predicted_ml_corrected" in r for r in rows):
        extra["clinical_corrected"] = evaluation.clinical_summary(rows, "predicted_ml_corrected")
    summary = tables.summarise(rows, detection_rows) | extra | {
        "profile": cfg.profile, "device": cfg.device, "timings_s": timings, "notes": notes,
        "failure_rule": cfg.failure_rule, "correction": cfg.correction,
        "dataset": {"name": cfg.dataset, "root": str(root), "fingerprint": fingerprint,
                    "phantom": cfg.data is None},
        "provenance": reg.provenance({"segmenter": cfg.segmenter, "uncertainty": cfg.uncertainty,
                                      "loss": cfg.loss, "dataset": cfg.dataset}
                                     | ({"detector": cfg.detector} if cfg.detector else {})),
    }
    tables.write_csv(out / "cases.csv", rows)
    if detection_rows:
        tables.write_csv(out / "detection.csv", detection_rows)
    _write_json(out / "summary.json", summary)
    return summary


def _rule(cfg: RunConfig) -> failure_rules.FailureRule:
    fields = {k: v for k, v in cfg.failure_rule.items() if k not in ("hash", "definition_version")}
    return failure_rules.FailureRule(**fields)


def _to_original(params: PreprocessParams) -> evaluation.ToOriginal:
    def to_original(v: Volume, labels: np.ndarray) -> np.ndarray:
        return labels_to_original(labels, v.reference.shape, v.spacing, params.spacing)

    return to_original


def _volume(c: cache.Prepared, fold: int, arrays: Any) -> Volume:
    key = f"{c.patient}_{c.phase}"
    return Volume(c.patient, c.phase, c.group, fold, c.spacing, c.original_labels, c.labels,
                  arrays[f"{key}_labels"], arrays[f"{key}_uncertainty"], arrays[f"{key}_failures"])


class _Attributed:
    """A plugin object handed to harness code: errors raised in its calls name it, not the caller's plugin
    (a failing loss inside training is the loss's fault, not the segmenter's)."""

    def __init__(self, cfg: RunConfig, kind: str, obj: Callable[..., Any]) -> None:
        self.cfg, self.kind, self.obj = cfg, kind, obj

    def __call__(self, *args: Any) -> Any:
        return _plugin_call(self.cfg, self.kind, self.obj, *args)


def _plugin_call(cfg: RunConfig, kind: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call into a plugin; its unexpected exception becomes a PluginError naming the method."""
    try:
        return fn(*args)
    except (UsageError, DataError, PluginError, KeyboardInterrupt):
        raise
    except Exception as exc:
        spec = {"segmenter": cfg.segmenter, "uncertainty": cfg.uncertainty, "loss": cfg.loss,
                "detector": cfg.detector, "dataset": cfg.dataset}[kind]
        entry = registry().entry(kind, str(spec).split(":")[0])
        raise PluginError(f"{kind} '{spec}' ({entry.distribution} {entry.version}) failed: "
                          f"{type(exc).__name__}: {exc}") from exc


def _infer_fold(cfg: RunConfig, predict_volume: Callable[..., tuple[np.ndarray, np.ndarray]], model: Any, umap: Any,
                multiple: int, test: list[cache.Prepared], fold: int, params: PreprocessParams,
                rule: failure_rules.FailureRule, advance: Callable[[int], None]
                ) -> tuple[list[dict], dict[str, np.ndarray], dict[str, Any]]:
    """Predict (with ``uqbench.infer.mc.predict_volume``), post-process, score and label failures of every
    test case; sum calibration counts."""
    rows, arrays = [], {}
    counts = np.zeros((len(CLASS_NAMES), calibration.BINS, 3))
    brier, voxels = 0.0, 0
    for i, c in enumerate(test):
        mean, unc = predict_volume(model, c.image, umap, cfg.samples, multiple, cfg.device,
                                   cfg.seed * 100_003 + fold * 1000 + i, precision=cfg.precision)
        if not np.isfinite(unc).all() or unc.min() < 0 or unc.max() > 1:
            raise PluginError(f"uncertainty map '{cfg.uncertainty}' returned values outside [0, 1] or NaN "
                              f"for {c.patient} {c.phase}")
        probs = mean.transpose(1, 0, 2, 3)  # [C, Z, Y, X]
        try:
            calibration.check_probabilities(probs, f"{c.patient} {c.phase}")
        except ValueError as exc:
            raise PluginError(f"segmenter '{cfg.segmenter}' gave bad softmax output: {exc}") from None
        n, b, v = calibration.reliability_counts(probs, c.labels, f"{c.patient} {c.phase}")
        counts, brier, voxels = counts + n, brier + b, voxels + v
        labels = finalise(mean)
        original = labels_to_original(labels, c.original_labels.shape, c.spacing, params.spacing)
        key = f"{c.patient}_{c.phase}"
        _write_nifti(Path(cfg.out) / f"fold{fold}" / "nifti" / key, c, original, probs, unc, cfg.uncertainty,
                     params)
        arrays[f"{key}_labels"], arrays[f"{key}_uncertainty"] = labels, unc.astype(np.float16)
        arrays[f"{key}_failures"] = failure_rules.failure_map(labels, c.labels, rule, params.spacing)
        rows += evaluation.case_rows(_volume(c, fold, arrays), original)
        advance(1)
    return rows, arrays, {"counts": counts.tolist(), "brier_sum": brier, "voxels": voxels}


def _write_nifti(stem: Path, c: cache.Prepared, labels: np.ndarray, probs: np.ndarray, unc: np.ndarray,
                uncertainty: str, params: PreprocessParams) -> None:
    """The case's label map, mean probabilities [4-D, classes last] and uncertainty map in original geometry,
    with the source affine."""
    shape = c.original_labels.shape
    nifti.write(stem.with_name(f"{stem.name}_labels.nii.gz"), labels.astype(np.uint8), c.affine)
    nifti.write(stem.with_name(f"{stem.name}_probs.nii.gz"),
                map_to_original(probs, shape, c.spacing, params.spacing), c.affine, quantum=NIFTI_QUANTUM)
    nifti.write(stem.with_name(f"{stem.name}_{uncertainty.replace(':', '_')}.nii.gz"),
                map_to_original(unc, shape, c.spacing, params.spacing), c.affine, quantum=NIFTI_QUANTUM)


def _detect(cfg: RunConfig, volumes: list[Volume], images: dict[str, np.ndarray], progress: Progress | None
            ) -> list[Volume]:
    """Out of fold: fold k's detector learns from the other folds' predictions, then scores fold k's patches.
    Its state and probabilities are kept in OUT/foldK/detector/; a fitted state is loaded, not refitted."""
    assert cfg.detector is not None
    reg = registry()

    def examples(v: Volume, with_failures: bool) -> list[DetectorExample]:
        image = images[f"{v.patient}_{v.phase}"]
        return [DetectorExample(image[z], v.uncertainty[z].astype(np.float32), v.prediction_grid[z],
                                v.failures[z] if with_failures else None) for z in range(v.prediction_grid.shape[0])]

    out: list[Volume] = []
    advance = _tracker(progress, "detect", len(cfg.folds))
    for k in cfg.folds:
        det = reg.create("detector", cfg.detector)
        fdir = Path(cfg.out) / f"fold{k}"
        train_ex = [ex for v in volumes if v.fold != k for ex in examples(v, True)]
        ctx = Context(Profile(cfg.profile), cfg.device, cfg.seed + k, fdir / "detector")
        ctx.workdir.mkdir(exist_ok=True)
        state = ctx.workdir / "state"
        if state.is_file():  # fitted before this run was interrupted
            _plugin_call(cfg, "detector", det.load, state)
        else:
            _plugin_call(cfg, "detector", det.fit, train_ex, ctx)
            _plugin_call(cfg, "detector", det.save, state.with_name("state.part"))
            state.with_name("state.part").replace(state)
        probs: dict[str, np.ndarray] = {}
        for v in volumes:
            if v.fold != k:
                continue
            p = np.stack([_plugin_call(cfg, "detector", det.predict, ex) for ex in examples(v, False)])
            try:
                check_patch_probabilities(p, v.prediction_grid.shape, v.where)
            except ValueError as exc:
                raise PluginError(f"detector '{cfg.detector}': {exc}") from None
            probs[f"{v.patient}_{v.phase}"] = p.astype(np.float32)
            out.append(replace(v, patch_probs=p))
        np.savez_compressed(ctx.workdir / "probs.npz", **probs)  # type: ignore[arg-type]
        advance(1)
    return out


def _correct(cfg: RunConfig, volumes: list[Volume], rows: list[dict], params: PreprocessParams) -> list[dict]:
    """Simulated correction of the patches flagged at probability > 0.5; corrected metrics join ``rows``,
    and one detection row per volume is returned."""
    corrected: dict[tuple[str, str, str], dict[str, Any]] = {}
    detection_rows = []
    to_original = _to_original(params)
    for v in volumes:
        assert v.patch_probs is not None
        flags = v.patch_probs > 0.5
        fixed = correct(v.prediction_grid, v.reference_grid, flags, cast(CorrectionMode, cfg.correction), v.failures)
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
            for metric in (*tables.METRICS, "predicted_voxels", "predicted_ml"):
                r[f"{metric}_corrected"] = fixed_row[metric]
    return detection_rows
