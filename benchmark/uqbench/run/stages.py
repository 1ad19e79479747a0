"""The work of each stage of a run, one function per stage, each writing its outputs into the folder the stage
store gives it (``uqbench.store``) and reading only its arguments. ``uqbench.run.graph`` keys them, orders them
and decides which to run; nothing here knows about folds of a run or about the store.

Every function takes the work folder first and the rest by keyword. Per-case outputs are written one file at a
time (atomically), so a stage killed half-way resumes at the next case.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.api import Context, DetectorExample
from uqbench.data import cache, nifti
from uqbench.data.preprocess import PreprocessParams, labels_to_original, map_to_original
from uqbench.errors import PluginError
from uqbench.files import write_atomic
from uqbench.infer.postprocess import finalise
from uqbench.protocol import calibration
from uqbench.protocol import failures as failure_rules
from uqbench.protocol.detection import check_patch_probabilities
from uqbench.scoring import files as read
from uqbench.scoring.case import CalibrationCounts, Volume, geometry, score_case

NIFTI_QUANTUM = 1e-3  # probabilities and maps are written in steps of 0.001 (see nifti.write)
STATISTICS = ("mean", "variance", "mean_entropy")  # stored as float16: what every moment-based map reads

Blame = Callable[..., Any]
"""``blame(kind, fn, *args, where=..., **kwargs)``: call into a plugin so that its failure names it (the run graph's
Blamer.call, bound to the run)."""


def case_key(c: cache.Prepared) -> str:
    return f"{c.patient}_{c.phase}"


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Compressed arrays, written atomically."""
    def write(tmp: Path) -> None:
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]  # the stub lets **dict reach allow_pickle

    write_atomic(path, write, part=".part.npz")


def predict(work: Path, *, cases: Sequence[cache.Prepared], sample: Callable[[cache.Prepared, int],
            dict[str, np.ndarray]], seed: int, export: bool, params: PreprocessParams,
            advance: Callable[[int], None]) -> None:
    """Per case ``<case>.npz``: the label map (arg-max of the float32 mean softmax, largest component) and the
    statistics ``sample(case, seed)`` returned (float16; a map computed from raw samples stays float32); when
    ``export``, the mean probabilities as NIfTI in original geometry, which the score stage reads. Cases already
    written by an interrupted attempt are kept: case ``i`` always gets seed ``seed + i``."""
    for i, c in enumerate(cases):
        path = work / f"{case_key(c)}.npz"
        if path.is_file():
            advance(1)
            continue
        stats = sample(c, seed + i)
        mean = stats["mean"]  # [Z, C, Y, X] float32
        out: dict[str, np.ndarray] = {"labels": finalise(mean)}
        out |= {k: v.astype(np.float16) for k, v in stats.items() if k in STATISTICS}
        if "map" in stats:
            out["map"] = stats["map"].astype(np.float32)
        if export:
            _nifti(probabilities_file(work, c), c=c, values=mean.transpose(1, 0, 2, 3), params=params,
                   quantum=NIFTI_QUANTUM)
        write_npz(path, out)
        advance(1)


def read_prediction(folder: Path, c: cache.Prepared) -> dict[str, np.ndarray]:
    with np.load(folder / f"{case_key(c)}.npz") as z:
        return {k: z[k] for k in z.files}


def probabilities_file(folder: Path, c: cache.Prepared) -> Path:
    return folder / "nifti" / f"{case_key(c)}_probs.nii.gz"


def map_file(folder: Path, c: cache.Prepared, umap_name: str) -> Path:
    return folder / "nifti" / f"{case_key(c)}_{umap_name.replace(':', '_')}.nii.gz"


def labels_file(folder: Path, c: cache.Prepared) -> Path:
    return folder / "nifti" / f"{case_key(c)}_labels.nii.gz"


def maps(work: Path, *, cases: Sequence[cache.Prepared], predictions: Path, umap_name: str,
         compute: Callable[[dict[str, np.ndarray], cache.Prepared], np.ndarray], params: PreprocessParams) -> None:
    """Each case's uncertainty map from its stored statistics, checked to lie in [0, 1], as NIfTI in original
    geometry: what the score stage reads, as it reads any tool's map."""
    for c in cases:
        stats = read_prediction(predictions, c)
        unc = stats["map"] if "map" in stats else compute(stats, c)
        try:
            calibration.check_map(unc, f"{c.patient} {c.phase}")
        except ValueError as exc:
            raise PluginError(f"uncertainty map '{umap_name}' returned a bad map: {exc}") from None
        _nifti(map_file(work, c, umap_name), c=c, values=unc, params=params, quantum=NIFTI_QUANTUM)


def score(work: Path, *, cases: Sequence[cache.Prepared], predictions: Path, maps: Path, umap_name: str, fold: int,
          rule: failure_rules.FailureRule, params: PreprocessParams, probabilities: bool,
          advance: Callable[[int], None]) -> None:
    """Write each label map as NIfTI in original geometry, then score the case's files (labels, the map, and
    the probabilities when ``probabilities``) with ``uqbench.scoring.case.score_case``, exactly as ``uqbench evaluate``
    scores files made elsewhere: ``rows.json`` (per case and class), ``calibration.json`` (per case its reliability
    counts) and ``grid.npz`` (per case the labels, failure voxels and map on the 1.4 mm grid)."""
    rows: list[dict[str, Any]] = []
    counts: list[CalibrationCounts] = []
    grid: dict[str, np.ndarray] = {}
    for c in cases:
        original = labels_to_original(read_prediction(predictions, c)["labels"],
                                      original_shape=c.original_labels.shape, spacing=c.spacing, target=params.spacing)
        nifti.write(labels_file(work, c), original.astype(np.uint8), c.affine, header=c.header)
        geo = geometry(c)
        scored = score_case(
            c, fold=fold, labels=read.read_labels(labels_file(work, c), geo),
            probabilities=read.read_probabilities(probabilities_file(predictions, c), geo) if probabilities
            else None,
            uncertainty=read.read_map(map_file(maps, c, umap_name), geo), rule=rule, params=params)
        rows += scored.rows
        if scored.calibration is not None:
            counts.append(scored.calibration)
        grid |= grid_arrays(scored.volume)
        advance(1)
    write_atomic(work / "rows.json", lambda tmp: tmp.write_text(json.dumps(rows)))
    write_atomic(work / "calibration.json", lambda tmp: tmp.write_text(json.dumps(
        [{"counts": n.tolist(), "brier_sum": brier, "voxels": voxels} for n, brier, voxels in counts])))
    write_npz(work / "grid.npz", grid)


def read_calibration(work: Path) -> list[CalibrationCounts]:
    """The per-case reliability counts a score stage wrote (``calibration.json``), in its cases' order."""
    cases = json.loads((work / "calibration.json").read_text())
    return [(np.asarray(c["counts"]), c["brier_sum"], c["voxels"]) for c in cases]


def grid_arrays(v: Volume) -> dict[str, np.ndarray]:
    """A scored volume's grid arrays as ``grid.npz`` stores them."""
    key = f"{v.patient}_{v.phase}"
    return {f"{key}.labels": v.prediction_grid, f"{key}.failures": v.failures, f"{key}.map": v.uncertainty}


def volume(c: cache.Prepared, fold: int, *, grid: Any, scored: Path) -> Volume:
    """A case's Volume (what evaluation reads) from what its score stage wrote in ``scored``: ``grid.npz`` and
    the label map in original geometry."""
    key = case_key(c)
    return Volume(patient=c.patient, phase=c.phase, group=c.group, fold=fold, spacing=c.spacing,
                  reference=c.original_labels, prediction=read.read_labels(labels_file(scored, c), geometry(c)),
                  reference_grid=c.labels, prediction_grid=grid[f"{key}.labels"],
                  uncertainty=grid[f"{key}.map"], failures=grid[f"{key}.failures"])


def examples(v: Volume, image: np.ndarray, with_failures: bool) -> list[DetectorExample]:
    """A volume's slices as detector examples (failure labels only for training)."""
    return [DetectorExample(image=image[z], uncertainty=v.uncertainty[z].astype(np.float32),
                            segmentation=v.prediction_grid[z], failures=v.failures[z] if with_failures else None)
            for z in range(v.prediction_grid.shape[0])]


def detect(work: Path, *, detector: Any, name: str, blame: Blame, fit: Sequence[tuple[Volume, np.ndarray]],
           test: Sequence[tuple[Volume, np.ndarray]], context: Context,
           advance: Callable[[int], None] = lambda n: None) -> None:
    """Fit ``detector`` on the (volume, image) pairs of ``fit`` and write ``probs.npz``: its patch probabilities
    for each of ``test``. The fitted state is saved as ``state`` before predicting, so a stage interrupted
    after fitting resumes by loading it; the detector's own files (checkpoints) live in ``workdir/``."""
    context.workdir.mkdir(exist_ok=True)
    advance(0)  # the bar appears before a fit that may take minutes
    state = work / "state"
    if state.is_file():
        blame(detector.load, state, where="loading the fitted detector")
    else:
        train_ex = [ex for v, image in fit for ex in examples(v, image, True)]
        blame(detector.fit, train_ex, context, where="fitting the detector")
        blame(detector.save, state.with_name("state.part"), where="saving the detector")
        state.with_name("state.part").replace(state)
    advance(1)  # fitted (or loaded): then one step per volume predicted
    probs: dict[str, np.ndarray] = {}
    for v, image in test:
        p = np.stack([blame(detector.predict, ex, where=f"detection, {v.where}") for ex in examples(v, image, False)])
        try:
            check_patch_probabilities(p, v.prediction_grid.shape, v.where)
        except ValueError as exc:
            raise PluginError(f"detector '{name}': {exc}") from None
        probs[f"{v.patient}_{v.phase}"] = p.astype(np.float32)
        advance(1)
    write_npz(work / "probs.npz", probs)


def _nifti(path: Path, *, c: cache.Prepared, values: np.ndarray, params: PreprocessParams, quantum: float) -> None:
    """Values on the network grid ([Z, Y, X] or [C, Z, Y, X]) as NIfTI in the case's original geometry."""
    path.parent.mkdir(exist_ok=True)
    nifti.write(path, map_to_original(values, original_shape=c.original_labels.shape, spacing=c.spacing,
                                      target=params.spacing), c.affine, header=c.header, quantum=quantum)
