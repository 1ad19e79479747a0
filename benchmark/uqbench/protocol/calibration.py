"""Calibration of the mean softmax probabilities (Fig. 1 of the preliminary paper) and risk-coverage of
uncertainty maps (paper section III-C).

Reliability diagram: per class c, one-vs-rest, every voxel's probability of c is put in one of 10
equal-width bins ([0, 0.1), ..., [0.9, 1.0], 1.0 in the last); per bin the mean probability (confidence)
and the share of voxels whose reference is c (frequency). ``pooled`` puts every class's one-vs-rest pairs
together, as the paper's diagram over all tissue classes. All voxels of the 1.4 mm grid count. Expected
calibration error: sum over bins of (voxels in bin / all voxels) * |frequency - confidence|. Brier score:
mean over voxels of sum over classes of (p_c - [reference == c])^2 (the paper's Eq. 5 without the 1/N of
a batch). Counts are additive, so volumes are pooled voxel by voxel by summing them.

Risk-coverage: each volume is cropped to the bounding box of its reference labels; its voxels are ranked
by uncertainty; the 0th..100th percentiles of the uncertainty are the thresholds; at a threshold t the
voxels with uncertainty <= t are kept (segmented automatically) and the rest referred to an expert.
Coverage is the kept share; risk is either ``error-rate``, the share of kept voxels that are wrong
(prediction != reference; the selective risk of Geifman et al., uqbench's), or ``error-count``, the number of
wrong voxels kept (the paper's III-C: "the number of incorrectly segmented voxels per patient volume is used as
a measure of risk"; the authors' eval_umaps/generate_data.py). Each volume's curve is interpolated linearly
onto coverage 0..100 % (constant below its smallest coverage) and the curves are averaged over volumes. AURC
is the trapezoid area under the mean curve over coverage in [0, 1]; e-AURC subtracts the area of the optimal
ranking (all errors most uncertain: with k of N voxels kept and E errors, max(0, k - (N - E)) errors kept,
divided by k for the rate), evaluated at the same kept counts and interpolated the same way, so e-AURC is 0
for a perfect ranking and never negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from uqbench.protocol.metrics import bounding_box

RiskMeasure = Literal["error-rate", "error-count"]
BINS = 10
GRID = np.arange(101, dtype=np.float64)  # coverage in percent


def check_probabilities(probs: np.ndarray, where: str) -> None:
    """ValueError naming ``where`` unless ``probs`` [C, ...] are finite, in [0, 1] and sum to 1 over C."""
    if not np.isfinite(probs).all():
        raise ValueError(f"{where}: probabilities hold NaN or infinite values")
    if probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise ValueError(f"{where}: probabilities outside [0, 1] (min {probs.min():.4g}, max {probs.max():.4g})")
    if np.abs(probs.sum(0, dtype=np.float64) - 1).max() > 1e-2:
        raise ValueError(f"{where}: probabilities do not sum to 1 over classes")


def check_map(values: np.ndarray, where: str) -> None:
    """ValueError naming ``where`` unless an uncertainty map is finite and within [0, 1]."""
    if not np.isfinite(values).all():
        raise ValueError(f"{where}: uncertainty map holds NaN or infinite values")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(f"{where}: uncertainty map outside [0, 1] (min {values.min():.4g}, max {values.max():.4g})")


def reliability_counts(probs: np.ndarray, ref: np.ndarray, where: str = "volume") -> tuple[np.ndarray, float, int]:
    """Per class and bin (sum of probabilities, sum of positives, voxels) as a [C, BINS, 3] array, plus the
    Brier sum and the voxel count, for probabilities [C, *S] against reference labels [*S]."""
    check_probabilities(probs, where)
    if probs.shape[1:] != ref.shape:
        raise ValueError(f"{where}: probabilities {probs.shape[1:]} and reference {ref.shape} differ in shape")
    n_classes = probs.shape[0]
    counts = np.zeros((n_classes, BINS, 3))
    brier = 0.0
    for c in range(n_classes):
        p = np.clip(probs[c].ravel().astype(np.float64), 0, 1)
        y = (ref.ravel() == c).astype(np.float64)
        b = np.minimum((p * BINS).astype(np.int64), BINS - 1)
        counts[c, :, 0] = np.bincount(b, weights=p, minlength=BINS)
        counts[c, :, 1] = np.bincount(b, weights=y, minlength=BINS)
        counts[c, :, 2] = np.bincount(b, minlength=BINS)
        brier += float(((p - y) ** 2).sum())
    return counts, brier, int(ref.size)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reliability:
    """A reliability diagram: per bin the mean probability, the observed frequency (None for an empty bin)
    and the voxel count; and the expected calibration error."""

    confidence: list[float | None]
    frequency: list[float | None]
    voxels: list[int]
    ece: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskCoverage:
    """The mean risk-coverage curve over ``volumes`` (coverage in percent), its AURC and e-AURC (risk as a share
    of kept voxels, or in voxels for ``error-count``)."""

    measure: RiskMeasure
    coverage: list[float]
    risk: list[float]
    aurc: float
    e_aurc: float
    volumes: int


def reliability(counts: np.ndarray) -> Reliability:
    """Confidence, frequency and voxels per bin, and the ECE, from [BINS, 3] counts (empty bins: None)."""
    total = counts[:, 2].sum()
    if total == 0:
        raise ValueError("reliability: no voxel was counted")
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = counts[:, 0] / counts[:, 2]
        freq = counts[:, 1] / counts[:, 2]
    empty = counts[:, 2] == 0
    return Reliability(confidence=[None if e else float(v) for e, v in zip(empty, conf, strict=True)],
                       frequency=[None if e else float(v) for e, v in zip(empty, freq, strict=True)],
                       voxels=[int(v) for v in counts[:, 2]],
                       ece=float(np.abs(counts[:, 0] - counts[:, 1]).sum() / total))


def _crop_to_reference(ref: np.ndarray) -> tuple[slice, ...]:
    """The box of the reference labels; the whole volume when it has none."""
    return bounding_box(ref > 0) or tuple(slice(None) for _ in ref.shape)


def risk_coverage(uncertainty: np.ndarray, pred: np.ndarray, ref: np.ndarray, *, where: str = "volume",
                  measure: RiskMeasure = "error-rate") -> tuple[np.ndarray, np.ndarray]:
    """One volume's selective risk on the coverage grid 0..100 %, and the optimal ranking's (module docstring)."""
    check_map(uncertainty, where)
    if not (uncertainty.shape == pred.shape == ref.shape):
        raise ValueError(f"{where}: uncertainty {uncertainty.shape}, prediction {pred.shape} and reference "
                         f"{ref.shape} differ in shape")
    box = _crop_to_reference(ref)
    u = uncertainty[box].ravel().astype(np.float64)
    err = (pred[box] != ref[box]).ravel()
    order = np.argsort(u, kind="stable")
    u_sorted, cum_err = u[order], np.cumsum(err[order])
    kept = np.searchsorted(u_sorted, np.percentile(u, GRID), side="right")  # >= 1: the 0th percentile is the min
    kept = np.unique(kept)
    coverage = 100.0 * kept / u.size
    per = kept if measure == "error-rate" else 1
    risk = cum_err[kept - 1] / per
    best = np.maximum(0, kept - (u.size - int(err.sum()))) / per
    return np.interp(GRID, coverage, risk), np.interp(GRID, coverage, best)


def aurc(curves: list[np.ndarray], optimal: list[np.ndarray], measure: RiskMeasure = "error-rate") -> RiskCoverage:
    """Mean risk-coverage curve over volumes, its AURC and e-AURC."""
    if not curves:
        raise ValueError("risk-coverage: the case list is empty")
    mean = np.mean(curves, axis=0)
    area = float(np.trapezoid(mean, GRID / 100.0))
    best = float(np.trapezoid(np.mean(optimal, axis=0), GRID / 100.0))
    return RiskCoverage(measure=measure, coverage=GRID.tolist(), risk=mean.tolist(), aurc=area, e_aurc=area - best,
                        volumes=len(curves))
