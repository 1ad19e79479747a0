"""A set of scored cases' aggregate: everything the protocol measures about them, whoever made them.

Each case is scored first (``uqbench.scoring.case``); this module corrects the flagged patches, measures
segmentation, calibration, risk-coverage, detection, correction effort, significance and clinical agreement,
and writes the tables. A run and ``uqbench evaluate`` both end here. Definitions live in ``uqbench.protocol``;
this module applies them under a protocol preset (``uqbench.protocol.presets``) and summarises.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.api import CLASS_NAMES, PHASES
from uqbench.data.preprocess import PreprocessParams
from uqbench.protocol import calibration, clinical, detection, stats
from uqbench.protocol.presets import Preset
from uqbench.results import tables
from uqbench.results.summary import (
    Calibration,
    Clinical,
    DetectionCurves,
    EffortCurve,
    EffortPoint,
    Results,
    Significance,
)
from uqbench.scoring import positions
from uqbench.scoring.case import Volume, case_rows
from uqbench.scoring.correction import correct_volumes, fixed, footprint, per_volume


def _patient_indices(rows: Sequence[dict[str, Any]], column: str, density: float) -> dict[str, dict[str, float]]:
    vols: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        vols.setdefault(r["patient"], {}).setdefault(r["phase"], {})[r["class"]] = float(r[column])
    return {p: clinical.indices(v["ED"], v["ES"], density=density) for p, v in vols.items() if "ED" in v and "ES" in v}


def clinical_summary(rows: Sequence[dict[str, Any]], column: str = "predicted_ml", *,
                     density: float = clinical.MYOCARDIAL_DENSITY) -> Clinical:
    """Agreement of each clinical index computed from ``column`` with the reference, over patients with both
    phases (myocardial mass at ``density`` g/mL)."""
    auto, ref = _patient_indices(rows, column, density), _patient_indices(rows, "reference_ml", density)
    patients = sorted(auto)
    return Clinical(patients=len(patients), units=dict(clinical.INDICES), myocardial_density=density,
                    indices={name: clinical.agreement([auto[p][name] for p in patients],
                                                      [ref[p][name] for p in patients])
                             for name in clinical.INDICES})


def significance(rows: Sequence[dict[str, Any]], protocol: Preset) -> Significance:
    """Corrected against segmentation-only: Dice and HD per phase and class, and the clinical indices'
    absolute errors (patients where both are defined), with Mann-Whitney U (sided as ``protocol`` says) and
    paired Wilcoxon p-values."""
    sided, density = protocol.mann_whitney, protocol.myocardial_density
    by_metric: dict[str, dict[str, dict[str, stats.Comparison]]] = {"dice": {}, "hd": {}}
    for metric, out in by_metric.items():
        for phase in PHASES:
            for cls in CLASS_NAMES[1:]:
                sel = [r for r in rows if r["phase"] == phase and r["class"] == cls and f"{metric}_corrected" in r]
                if sel:
                    out.setdefault(phase, {})[cls] = stats.compare([r[metric] for r in sel],
                                                                   [r[f"{metric}_corrected"] for r in sel],
                                                                   mann_whitney=sided)
    corrected = [r for r in rows if "predicted_ml_corrected" in r]
    ref = _patient_indices(corrected, "reference_ml", density)
    before = _patient_indices(corrected, "predicted_ml", density)
    after = _patient_indices(corrected, "predicted_ml_corrected", density)
    clinical_abs_error = {}
    for name in clinical.INDICES:
        pairs = [(abs(before[p][name] - ref[p][name]), abs(after[p][name] - ref[p][name])) for p in sorted(after)]
        pairs = [(b, a) for b, a in pairs if np.isfinite(b) and np.isfinite(a)]
        clinical_abs_error[name] = stats.compare([b for b, _ in pairs], [a for _, a in pairs], mann_whitney=sided)
    return Significance(mann_whitney=sided, dice=by_metric["dice"], hd=by_metric["hd"],
                        clinical_abs_error=clinical_abs_error)


def risk_coverage_summary(volumes: Sequence[Volume], measure: calibration.RiskMeasure = "error-rate"
                          ) -> calibration.RiskCoverage:
    """Mean risk-coverage curve, AURC and e-AURC over volumes (1.4 mm grid), risk as ``measure``."""
    curves, best = [], []
    for v in volumes:
        r, b = calibration.risk_coverage(v.uncertainty.astype(np.float64), v.prediction_grid, v.reference_grid,
                                         where=v.where, measure=measure)
        curves.append(r)
        best.append(b)
    return calibration.aurc(curves, best, measure)


def calibration_summary(counts: np.ndarray, brier_sum: float, voxels: int) -> Calibration:
    """Reliability data per class and pooled, ECE and Brier, from summed ``reliability_counts``."""
    return Calibration(bins=calibration.BINS,
                       per_class={CLASS_NAMES[c]: calibration.reliability(counts[c]) for c in range(counts.shape[0])},
                       pooled=calibration.reliability(counts.sum(0)),
                       brier=brier_sum / voxels if voxels else float("nan"), voxels=voxels)


def detection_summary(volumes: Sequence[Volume], protocol: Preset) -> DetectionCurves:
    """Voxel-level FROC and slice-level average precision of the detector's patch probabilities, under the
    conventions of ``protocol``."""
    scored = [v for v in volumes if v.patch_probs is not None]
    probs = [v.patch_probs for v in scored if v.patch_probs is not None]
    failures, thresholds = [v.failures for v in scored], protocol.thresholds()
    return DetectionCurves(
        froc=detection.froc(probs, failures, thresholds, convention=protocol.froc, flag=protocol.flag),
        slices=detection.slice_detection([v.patient for v in scored], probs, failures,
                                         convention=protocol.slice_ap, thresholds=thresholds, flag=protocol.flag))


EFFORT_SHARES = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Shares of all patches the correction-effort curve aims to flag (its thresholds are the matching quantiles
of the detector's probabilities, so the curve is spread whatever the detector's calibration)."""


def effort_thresholds(probs: Sequence[np.ndarray], shares: Sequence[float] = EFFORT_SHARES) -> list[float]:
    """For each share s, the threshold t with about s of all patches above it (share 0: the maximum, so
    nothing is flagged; share 1: -1, so everything is)."""
    p = np.concatenate([q.ravel() for q in probs])
    return [-1.0 if s >= 1 else float(np.quantile(p, 1 - s)) for s in shares]


def effort_curve(volumes: Sequence[Volume], *, protocol: Preset, target: float,
                 shares: Sequence[float] = EFFORT_SHARES) -> EffortCurve:
    """Quality after simulated correction against the share of patches and of slices an expert inspects.

    At each threshold (``effort_thresholds``) the patches with probability above it (strictly, whatever the
    preset: the thresholds are quantiles, and share 0 must flag nothing) are corrected as ``protocol`` says and
    every volume is re-scored; the areas under mean Dice against each share summarise the curve."""
    scored = [v for v in volumes if v.patch_probs is not None]
    if not scored:
        raise ValueError("correction-effort curve: the case list is empty")
    total_patches = sum(int(v.patch_probs.size) for v in scored if v.patch_probs is not None)
    thresholds = effort_thresholds([v.patch_probs for v in scored if v.patch_probs is not None], shares)
    total_slices = sum(v.prediction_grid.shape[0] for v in scored)
    footprints = [footprint(v, target) for v in scored]
    points: list[EffortPoint] = []
    for t in thresholds:
        flags = [v.patch_probs > t for v in scored if v.patch_probs is not None]
        n_flagged = sum(int(f.sum()) for f in flags)
        if points and points[-1].flagged_patches == n_flagged:  # nested sets: same count, same set
            points.append(replace(points[-1], threshold=t))
            continue
        rows: list[dict[str, Any]] = []
        for v, f, fp in zip(scored, flags, footprints, strict=True):
            rows += case_rows(v, fixed(v, f, protocol=protocol, fp=fp))
        clin = clinical_summary(rows, density=protocol.myocardial_density)
        points.append(EffortPoint(threshold=t, flagged_patches=n_flagged, share_of_patches=n_flagged / total_patches,
                                  share_of_slices=sum(int(f.any((1, 2)).sum()) for f in flags) / total_slices,
                                  dice=float(np.mean([r["dice"] for r in rows])),
                                  hd=float(np.mean([r["hd"] for r in rows])),
                                  clinical_mae={name: clin.indices[name].mae for name in clinical.INDICES}))
    return EffortCurve(mode=protocol.correction, points=points,
                       auc_dice_vs_patches=detection.area_under([p.share_of_patches for p in points],
                                                                [p.dice for p in points]),
                       auc_dice_vs_slices=detection.area_under([p.share_of_slices for p in points],
                                                               [p.dice for p in points]))



@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """A set of scored cases measured: the results a summary extends, and the tables."""

    results: Results
    rows: list[dict[str, Any]]
    detection_rows: list[dict[str, Any]]
    slice_rows: list[dict[str, Any]]  # each case's structures by slice position (uqbench.scoring.positions)
    timings_s: dict[str, float]


def measure(*, rows: list[dict[str, Any]], volumes: Sequence[Volume],
            reliability: tuple[np.ndarray, float, int] | None, protocol: Preset, params: PreprocessParams
            ) -> Measured:
    """The protocol's results for scored volumes (``uqbench.scoring.case``) and their rows: volumes with patch
    probabilities are corrected and their detection measured; risk-coverage needs every volume's map, the
    reliability data the summed counts of the probabilities (``reliability``). The run and ``uqbench evaluate``
    both end here."""
    detected = [v for v in volumes if v.patch_probs is not None]
    curves = effort = compared = None
    detection_rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    if detected:
        detection_rows = correct_volumes(detected, rows, protocol=protocol, target=params.spacing)
        t0 = time.perf_counter()
        curves = detection_summary(detected, protocol)
        effort = effort_curve(detected, protocol=protocol, target=params.spacing)
        compared = significance(rows, protocol)
        timings["effort_curve_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    values, budget_curves = per_volume(volumes, rows, protocol=protocol, target=params.spacing)
    timings["budget_s"] = time.perf_counter() - t0
    with_maps = bool(volumes) and all(v.uncertainty.size for v in volumes)
    corrected_rows = [r for r in rows if "dice_corrected" in r]
    empty_reference, empty_prediction = tables.empty_counts(rows)
    density = protocol.myocardial_density
    results = Results(
        segmentation=tables.scores(rows),
        corrected=tables.scores(corrected_rows, corrected=True) if corrected_rows else None,
        empty_reference=empty_reference, empty_prediction=empty_prediction,
        detection=tables.detection_totals(detection_rows) if detection_rows else None,
        risk_coverage=risk_coverage_summary(volumes, protocol.risk) if with_maps else None,
        calibration=calibration_summary(*reliability) if reliability is not None else None,
        detection_curves=curves, correction_effort=effort, significance=compared,
        clinical=clinical_summary(rows, density=density),
        clinical_corrected=clinical_summary(rows, "predicted_ml_corrected", density=density) if corrected_rows
        else None, per_volume=values, budget_curves=budget_curves)
    by_position = [r for v in volumes for r in positions.slice_rows(
        patient=v.patient, phase=v.phase, fold=v.fold, reference=v.reference, prediction=v.prediction,
        spacing=v.spacing)]
    return Measured(results=results, rows=rows, detection_rows=detection_rows, slice_rows=by_position,
                    timings_s=timings)


def write_tables(out: Path, measured: Measured, *, protocol: Preset) -> None:
    """OUT/cases.csv, slices.csv and positions.csv (uqbench.scoring.positions) and, when a detector ran,
    OUT/detection.csv; every row of cases.csv and detection.csv names the preset that made it."""
    tag = {"protocol": f"{protocol.label} {protocol.digest()}"}
    tables.write_csv(out / "cases.csv", [r | tag for r in measured.rows])
    tables.write_csv(out / "slices.csv", measured.slice_rows)
    tables.write_csv(out / "positions.csv", positions.position_table(measured.slice_rows))
    if measured.detection_rows:
        tables.write_csv(out / "detection.csv", [r | tag for r in measured.detection_rows])
