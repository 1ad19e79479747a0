"""Detection of failures (paper section IV, Fig. 3, Table III) and simulated correction (section V-C).

A detector gives every patch of the 8 x 8 grid of a slice a failure probability; a patch is flagged at
threshold t when its probability exceeds t (the run's operating point is t = 0.5).

- Voxel-level FROC: sensitivity = failure voxels inside flagged patches / all failure voxels (pooled over
  volumes), against the mean number per volume of flagged patches holding no failure voxel.
- Slice-level detection: a slice is positive when it holds a failure voxel; its score is its highest patch
  probability. Average precision is sum over thresholds of (recall step) * precision, thresholds at every
  distinct score (ties move together), computed over all slices pooled, and per patient (both phases'
  slices) averaged over the patients that have a positive slice (the others are counted, not scored).
- Simulated correction: ``patch`` (the paper's wording) replaces the predicted labels by the reference in
  every flagged patch; ``failures-only`` (the authors' code) replaces only the failure voxels inside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from uqbench.api import PATCH
from uqbench.protocol.patches import expand, grid_shape

THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)
CorrectionMode = Literal["patch", "failures-only"]
MODES: tuple[CorrectionMode, ...] = ("patch", "failures-only")

DetectorTraining = Literal["out-of-fold", "in-sample"]
"""What fold k's detector learns from. ``in-sample`` (paper V-B: maps "generated while training the segmentation
networks"): fold k's segmenter predicts its own training patients, and the detector learns from those.
``out-of-fold`` (uqbench's stricter choice): the test predictions of the other folds run. Either way the detector
is evaluated on fold k's test patients only, whose predictions it never saw."""
TRAINING_DATA: tuple[DetectorTraining, ...] = ("out-of-fold", "in-sample")


@dataclass(frozen=True, slots=True, kw_only=True)
class Froc:
    """Voxel sensitivity and false-positive patches per volume at each threshold."""

    threshold: list[float]
    sensitivity: list[float]
    false_positives_per_volume: list[float]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrCurve:
    """Precision and recall of "score > t" at each threshold t."""

    threshold: list[float]
    precision: list[float]
    recall: list[float]


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceDetection:
    """Slice-level detection: AP pooled over slices and averaged per patient, and the pooled PR curve."""

    ap_pooled: float
    ap_per_patient: float
    patients_scored: int  # patients with a failing slice, over which ap_per_patient is averaged
    patients_without_failure: int
    share_of_slices_with_failures: float
    pr_curve: PrCurve


def check_patch_probabilities(probs: np.ndarray, shape_zyx: tuple[int, ...], where: str) -> None:
    """ValueError naming ``where`` unless ``probs`` is a finite [Z, gy, gx] array in [0, 1] for this volume."""
    expect = (shape_zyx[0], *grid_shape(shape_zyx[1:]))
    if probs.shape != expect:
        raise ValueError(f"{where}: patch probabilities of shape {probs.shape}, expected {expect}")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError(f"{where}: patch probabilities hold NaN or values outside [0, 1]")


def voxels_per_patch(mask: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Count of True voxels per patch of every slice: [Z, Y, X] bool -> [Z, gy, gx] int."""
    z, y, x = mask.shape
    gy, gx = grid_shape((y, x), patch)
    padded = np.zeros((z, gy * patch, gx * patch), dtype=np.int64)
    padded[:, :y, :x] = mask
    out: np.ndarray = padded.reshape(z, gy, patch, gx, patch).sum(axis=(2, 4))
    return out


def froc(probs: Sequence[np.ndarray], failures: Sequence[np.ndarray], thresholds: np.ndarray = THRESHOLDS) -> Froc:
    """Voxel sensitivity and false-positive patches per volume at each threshold (see module docstring)."""
    if not probs:
        raise ValueError("FROC: the case list is empty")
    counts = [voxels_per_patch(f) for f in failures]
    p = np.concatenate([q.ravel() for q in probs])
    v = np.concatenate([c.ravel() for c in counts])
    total = v.sum()
    sens, fp = [], []
    for t in thresholds:
        flagged = p > t
        sens.append(float(v[flagged].sum() / total) if total else float("nan"))
        fp.append(float((flagged & (v == 0)).sum() / len(probs)))
    return Froc(threshold=[float(t) for t in thresholds], sensitivity=sens, false_positives_per_volume=fp)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Step-wise average precision; NaN when there is no positive."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order]
    tp = np.cumsum(y)
    last = np.r_[s[1:] != s[:-1], True]  # evaluate only after the last of tied scores
    tp, flagged = tp[last], np.flatnonzero(last) + 1
    recall = tp / n_pos
    precision = tp / flagged
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def slice_scores(probs: np.ndarray, failures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slice of one volume: highest patch probability, and whether it holds a failure voxel."""
    return probs.reshape(probs.shape[0], -1).max(1), np.asarray(failures.reshape(failures.shape[0], -1).any(1))


def precision_recall(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> PrCurve:
    """Precision and recall of "score > t" at each threshold (precision 1 where nothing is flagged)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos = max(1, int(positive.sum()))
    precision, recall = [], []
    for t in thresholds:
        flagged = scores > t
        tp = int((flagged & positive).sum())
        precision.append(tp / int(flagged.sum()) if flagged.any() else 1.0)
        recall.append(tp / n_pos)
    return PrCurve(threshold=[float(t) for t in thresholds], precision=precision, recall=recall)


def slice_detection(patients: Sequence[str], probs: Sequence[np.ndarray], failures: Sequence[np.ndarray]
                    ) -> SliceDetection:
    """Slice-level AP pooled and per patient averaged, the pooled precision-recall curve, and the share of
    slices holding a failure."""
    if not probs:
        raise ValueError("slice detection: the case list is empty")
    per: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for patient, p, f in zip(patients, probs, failures, strict=True):
        s, y = slice_scores(p, f)
        per.setdefault(patient, ([], []))[0].append(s)
        per[patient][1].append(y)
    all_s = np.concatenate([np.concatenate(s) for s, _ in per.values()])
    all_y = np.concatenate([np.concatenate(y) for _, y in per.values()])
    aps = [average_precision(np.concatenate(s), np.concatenate(y)) for s, y in per.values()]
    scored = [a for a in aps if np.isfinite(a)]
    return SliceDetection(ap_pooled=average_precision(all_s, all_y),
                          ap_per_patient=float(np.mean(scored)) if scored else float("nan"),
                          patients_scored=len(scored), patients_without_failure=len(aps) - len(scored),
                          share_of_slices_with_failures=float(all_y.mean()), pr_curve=precision_recall(all_s, all_y))


def correct(pred: np.ndarray, ref: np.ndarray, flagged: np.ndarray, *, mode: CorrectionMode = "patch",
            failures: np.ndarray | None = None) -> np.ndarray:
    """Labels after simulated correction of the flagged patches [Z, gy, gx] of a volume [Z, Y, X]."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    mask = np.stack([expand(f, pred.shape[1:]) for f in flagged]) if len(flagged) else np.zeros(pred.shape, bool)
    if mode == "failures-only":
        if failures is None:
            raise ValueError("correction 'failures-only' needs the failure map")
        mask &= failures
    elif mode != "patch":
        raise ValueError(f"unknown correction mode {mode!r}: expected one of {', '.join(MODES)}")
    return np.where(mask, ref, pred)


def area_under(x: Sequence[float], y: Sequence[float]) -> float:
    """Trapezoid area under y(x) after sorting by x (x shares in [0, 1])."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    order = np.argsort(xs, kind="stable")
    return float(np.trapezoid(ys[order], xs[order]))
