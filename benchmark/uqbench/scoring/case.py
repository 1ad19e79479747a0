"""One case scored: what the protocol measures of one case's outputs, whoever made them.

Outputs are judged as files in the case's original geometry: a ``uqbench run`` scores the NIfTI files it wrote
through this function, and ``uqbench evaluate`` scores another tool's (nnU-Net's) the same way, so one set of
files gives one set of numbers. Segmentation metrics, volumes and the reliability counts of the class
probabilities are computed in original geometry (paper section IV-A). What the protocol defines on the 1.4 mm
grid (failure voxels, paper section III-C; the map a detector reads; patches and simulated correction) is
computed after bringing the outputs onto that grid with the resampling that made the reference's grid
(``uqbench.data.preprocess``): labels one-hot and linear, maps linear. A set of scored cases is aggregated by
``uqbench.scoring.aggregate``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uqbench.api import CLASS_NAMES
from uqbench.data.cache import Prepared
from uqbench.data.preprocess import PreprocessParams, resample_image, resample_labels
from uqbench.protocol import calibration, clinical
from uqbench.protocol.failures import FailureRule, failure_map
from uqbench.protocol.metrics import score
from uqbench.scoring.files import Geometry

CalibrationCounts = tuple[np.ndarray, float, int]
"""``calibration.reliability_counts``: [C, BINS, 3] counts, the Brier sum and the voxel count."""


def sum_counts(cases: Sequence[CalibrationCounts]) -> CalibrationCounts | None:
    """Reliability counts summed over cases (None for none), each number correctly rounded (``math.fsum``): the
    total does not depend on the cases' order or grouping, so a run (per fold, then over folds) and
    ``uqbench evaluate`` (over a folder's files) agree to the last bit."""
    if not cases:
        return None
    stacked = np.stack([c[0] for c in cases]).reshape(len(cases), -1)
    counts = np.array([math.fsum(column) for column in stacked.T]).reshape(cases[0][0].shape)
    return counts, math.fsum(c[1] for c in cases), sum(c[2] for c in cases)


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    """One predicted volume with its reference: original geometry for scoring, the 1.4 mm grid for the rest."""

    patient: str
    phase: str
    group: str
    fold: int
    spacing: tuple[float, float, float]  # original voxel spacing (mm), [Z, Y, X]
    reference: np.ndarray  # original geometry
    prediction: np.ndarray  # original geometry: what is scored, and corrected patch by patch
    reference_grid: np.ndarray  # [Z, Y, X] on the 1.4 mm grid
    prediction_grid: np.ndarray
    uncertainty: np.ndarray
    failures: np.ndarray
    patch_probs: np.ndarray | None = None  # [Z, gy, gx] detector output

    @property
    def where(self) -> str:
        return f"{self.patient} {self.phase}"


def case_rows(v: Volume, original: np.ndarray) -> list[dict[str, Any]]:
    """One row per foreground class: Dice, HD, HD95, ASSD, voxel counts and volumes (mL)."""
    rows = []
    scores = score(original, v.reference, spacing=v.spacing, where=v.where)  # checks shapes and label values first
    ref_n = np.bincount(v.reference.ravel(), minlength=len(CLASS_NAMES))
    pred_n = np.bincount(original.ravel(), minlength=len(CLASS_NAMES))
    for cls, metrics in scores.items():
        rows.append({"patient": v.patient, "phase": v.phase, "group": v.group, "fold": v.fold,
                     "class": CLASS_NAMES[cls], **metrics,
                     "reference_voxels": int(ref_n[cls]), "predicted_voxels": int(pred_n[cls]),
                     "reference_ml": clinical.volume_ml(int(ref_n[cls]), v.spacing),
                     "predicted_ml": clinical.volume_ml(int(pred_n[cls]), v.spacing)})
    return rows


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseScore:
    """One case scored: per-class rows (original geometry), the grid volume the detectors and correction read,
    and the reliability counts of its probabilities (None without probabilities)."""

    rows: list[dict[str, Any]]
    volume: Volume
    calibration: CalibrationCounts | None


def geometry(c: Prepared) -> Geometry:
    """The original grid a prepared case's outputs must share."""
    return Geometry(where=f"{c.patient} {c.phase}", shape=c.original_labels.shape, spacing=c.spacing,
                    affine=c.affine)


def score_case(c: Prepared, *, fold: int, labels: np.ndarray, probabilities: np.ndarray | None,
               uncertainty: np.ndarray | None, rule: FailureRule, params: PreprocessParams) -> CaseScore:
    """Score a case's label map, and its class probabilities [C, Z, Y, X] and uncertainty map when given, all in
    original geometry (as ``uqbench.scoring.files`` reads and checks them). The grid map is stored as float16, the
    precision every detector has read since the first release."""
    where = f"{c.patient} {c.phase}"
    grid = resample_labels(labels, c.spacing, params.spacing)
    failures = failure_map(grid, c.labels, rule=rule, spacing=params.spacing)
    unc = (np.zeros((0,), np.float16) if uncertainty is None
           else np.clip(resample_image(uncertainty, c.spacing, params.spacing), 0, 1).astype(np.float16))
    volume = Volume(patient=c.patient, phase=c.phase, group=c.group, fold=fold, spacing=c.spacing,
                    reference=c.original_labels, prediction=labels, reference_grid=c.labels, prediction_grid=grid,
                    uncertainty=unc,
                    failures=failures)
    counts = (None if probabilities is None
              else calibration.reliability_counts(probabilities, c.original_labels, where))
    return CaseScore(rows=case_rows(volume, labels), volume=volume, calibration=counts)
