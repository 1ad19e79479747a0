"""Detection of failures (paper section IV, Fig. 3, Table III) and simulated correction (section V-C).

A detector gives every patch of the 8 x 8 grid of a slice a failure probability; a patch is flagged at
threshold t when its probability is > t (``flag=">"``) or >= t (``">="``, the authors' code); the run's
operating point is t = 0.5. Which conventions a run uses is its protocol preset (``uqbench.protocol.presets``).

- Voxel-level FROC, at each threshold, against the mean number per volume of flagged patches holding no
  failure voxel: sensitivity = failure voxels inside flagged patches / all failure voxels, either ``pooled``
  over volumes (uqbench) or ``per-volume``: that share per volume, averaged over the volumes holding a failure
  (the paper's "detection rate ... per volume"; the authors' utils/detection/froc.py).
- Slice-level detection: a slice is positive when it holds a failure voxel; its score is its highest patch
  probability. ``exact-per-patient`` average precision: sum over thresholds of (recall step) * precision,
  thresholds at every distinct score (ties move together), per patient (both phases' slices), averaged over the
  patients that have a positive slice (the others are counted, not scored); the same pooled over all slices is
  reported beside it. ``authors-40`` (utils/detection/froc.py with plotting/auc_curves.py): at each of the
  preset's thresholds, per volume, slice precision (1 when nothing is flagged) and recall (1 when the volume
  has no positive slice), each averaged over all volumes; from the highest threshold down,
  AP = sum of mean precision * increase of mean recall, starting from recall 0.
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

FlagRule = Literal[">", ">="]
FrocConvention = Literal["pooled", "per-volume"]
SliceApConvention = Literal["exact-per-patient", "authors-40"]

DetectorTraining = Literal["out-of-fold", "in-sample"]
"""What fold k's detector learns from. ``in-sample`` (paper V-B: maps "generated while training the segmentation
networks"): fold k's segmenter predicts its own training patients, and the detector learns from those.
``out-of-fold`` (uqbench's stricter choice): the test predictions of the other folds run. Either way the detector
is evaluated on fold k's test patients only, whose predictions it never saw."""
TRAINING_DATA: tuple[DetectorTraining, ...] = ("out-of-fold", "in-sample")


@dataclass(frozen=True, slots=True, kw_only=True)
class Froc:
    """Voxel sensitivity and false-positive patches per volume at each threshold."""

    convention: FrocConvention
    threshold: list[float]
    sensitivity: list[float]
    false_positives_per_volume: list[float]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrCurve:
    """Precision and recall of slices flagged at each threshold t (score > t, or >= t), pooled over slices."""

    threshold: list[float]
    precision: list[float]
    recall: list[float]


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceDetection:
    """Slice-level detection: the preset's AP, exact AP pooled over slices and averaged per patient, the share
    of slices holding a failure (pooled, and averaged per volume as the paper's Table III), and the PR curve."""

    ap: float  # under ap_convention
    ap_convention: SliceApConvention
    ap_pooled: float
    ap_per_patient: float
    patients_scored: int  # patients with a failing slice, over which ap_per_patient is averaged
    patients_without_failure: int
    share_of_slices_with_failures: float
    share_of_slices_with_failures_per_volume: float
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


def flagged(probs: np.ndarray, threshold: float, flag: FlagRule = ">") -> np.ndarray:
    """Which probabilities are flagged at ``threshold``: above it, or (``flag=">="``) at or above it."""
    return probs >= threshold if flag == ">=" else probs > threshold


def froc(probs: Sequence[np.ndarray], failures: Sequence[np.ndarray], thresholds: np.ndarray = THRESHOLDS, *,
         convention: FrocConvention = "pooled", flag: FlagRule = ">") -> Froc:
    """Voxel sensitivity and false-positive patches per volume at each threshold (see module docstring)."""
    if not probs:
        raise ValueError("FROC: the case list is empty")
    counts = [voxels_per_patch(f) for f in failures]
    totals = np.array([c.sum() for c in counts])
    sens, fp = [], []
    for t in thresholds:
        flags = [flagged(p, t, flag) for p in probs]
        found = np.array([c[f].sum() for c, f in zip(counts, flags, strict=True)])
        if convention == "per-volume":
            has = totals > 0
            sens.append(float(np.mean(found[has] / totals[has])) if has.any() else float("nan"))
        else:
            sens.append(float(found.sum() / totals.sum()) if totals.sum() else float("nan"))
        fp.append(float(np.mean([(f & (c == 0)).sum() for c, f in zip(counts, flags, strict=True)])))
    return Froc(convention=convention, threshold=[float(t) for t in thresholds], sensitivity=sens,
                false_positives_per_volume=fp)


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
    tp, n_flagged = tp[last], np.flatnonzero(last) + 1
    recall = tp / n_pos
    precision = tp / n_flagged
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def slice_scores(probs: np.ndarray, failures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slice of one volume: highest patch probability, and whether it holds a failure voxel."""
    return probs.reshape(probs.shape[0], -1).max(1), np.asarray(failures.reshape(failures.shape[0], -1).any(1))


def precision_recall(scores: np.ndarray, positive: np.ndarray, thresholds: np.ndarray = THRESHOLDS, *,
                     flag: FlagRule = ">") -> PrCurve:
    """Precision and recall of the slices flagged at each threshold (precision 1 where nothing is flagged)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos = max(1, int(positive.sum()))
    precision, recall = [], []
    for t in thresholds:
        hit = flagged(scores, t, flag)
        tp = int((hit & positive).sum())
        precision.append(tp / int(hit.sum()) if hit.any() else 1.0)
        recall.append(tp / n_pos)
    return PrCurve(threshold=[float(t) for t in thresholds], precision=precision, recall=recall)


def authors_average_precision(volumes: Sequence[tuple[np.ndarray, np.ndarray]], thresholds: np.ndarray, *,
                              flag: FlagRule = ">=") -> float:
    """``authors-40`` slice AP over volumes given as (slice scores, slice positives): per-volume precision and
    recall averaged over volumes at each threshold, then integrated from the highest threshold down."""
    if not volumes:
        raise ValueError("slice detection: the case list is empty")
    mean_p, mean_r = [], []
    for t in thresholds:
        ps, rs = [], []
        for s, y in volumes:
            hit = flagged(s, t, flag)
            tp = int((hit & y).sum())
            ps.append(tp / int(hit.sum()) if hit.any() else 1.0)
            rs.append(tp / int(y.sum()) if y.any() else 1.0)
        mean_p.append(float(np.mean(ps)))
        mean_r.append(float(np.mean(rs)))
    recall = np.r_[0.0, mean_r[::-1]]
    return float(np.sum(np.asarray(mean_p[::-1]) * np.diff(recall)))


def slice_detection(patients: Sequence[str], probs: Sequence[np.ndarray], failures: Sequence[np.ndarray], *,
                    convention: SliceApConvention = "exact-per-patient", thresholds: np.ndarray = THRESHOLDS,
                    flag: FlagRule = ">") -> SliceDetection:
    """Slice-level AP under ``convention`` with the exact AP pooled and averaged per patient, the pooled
    precision-recall curve, and the share of slices holding a failure. Each item is one volume."""
    if not probs:
        raise ValueError("slice detection: the case list is empty")
    vols = [slice_scores(p, f) for p, f in zip(probs, failures, strict=True)]
    per: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for patient, (s, y) in zip(patients, vols, strict=True):
        per.setdefault(patient, ([], []))[0].append(s)
        per[patient][1].append(y)
    all_s = np.concatenate([s for s, _ in vols])
    all_y = np.concatenate([y for _, y in vols])
    aps = [average_precision(np.concatenate(s), np.concatenate(y)) for s, y in per.values()]
    scored = [a for a in aps if np.isfinite(a)]
    ap_per_patient = float(np.mean(scored)) if scored else float("nan")
    ap = ap_per_patient if convention == "exact-per-patient" else authors_average_precision(vols, thresholds,
                                                                                           flag=flag)
    return SliceDetection(ap=ap, ap_convention=convention, ap_pooled=average_precision(all_s, all_y),
                          ap_per_patient=ap_per_patient, patients_scored=len(scored),
                          patients_without_failure=len(aps) - len(scored),
                          share_of_slices_with_failures=float(all_y.mean()),
                          share_of_slices_with_failures_per_volume=float(np.mean([y.mean() for _, y in vols])),
                          pr_curve=precision_recall(all_s, all_y, thresholds, flag=flag))


def correct(pred: np.ndarray, ref: np.ndarray, flags: np.ndarray, *, mode: CorrectionMode = "patch",
            failures: np.ndarray | None = None) -> np.ndarray:
    """Labels after simulated correction of the flagged patches [Z, gy, gx] of a volume [Z, Y, X]."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    mask = np.stack([expand(f, pred.shape[1:]) for f in flags]) if len(flags) else np.zeros(pred.shape, bool)
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
