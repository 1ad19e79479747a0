"""Protocol presets: every choice beyond the data and the folds that makes two results comparable, as one named,
hashed parameter set (``--protocol``). Results record the preset with its hash, so numbers made under different
presets are never put side by side by accident.

Where each choice comes from (paper = ../shared/seeds/001, Sander et al. 2020; code = the authors' released
toologicbv/cardiacSegUncertainty):

============================  =====================  ======================  =========================
parameter                     ``uqbench`` (ours)     ``sander2020`` (paper)  ``seed-code`` (their code)
============================  =====================  ======================  =========================
failure rule                  paper                  paper (V-B)             seed-code
                                                                             (detection/distance_transforms.py)
correction                    patch                  patch (V-C: "in image   failures-only
                                                     regions ... replaced")  (eval_detection/simulate_correction.py)
flag a patch at threshold t   p > t                  p > t (paper silent)    p >= t (same file, utils/detection/froc.py)
detector training             out-of-fold            in-sample (V-B)         in-sample
voxel FROC                    pooled over volumes    per volume (IV)         per volume (utils/detection/froc.py)
slice AP                      exact, per patient     exact, per patient      40 thresholds, averaged per volume
                                                     (Table III)             (utils/detection/froc.py,
                                                                             plotting/auc_curves.py)
curve thresholds              0.00, 0.01, ..., 1.00  0.00, 0.01, ..., 1.00   40 evenly from 0 to 1
risk (risk-coverage)          error rate             error count (III-C)     error count (eval_umaps/generate_data.py)
Mann-Whitney U p-value        two-sided              two-sided (IV)          one-sided: scipy's old default
                                                                             (eval_detection/helpers.py)
myocardial density (g/mL)     1.05                   1.05 (Bernard et al.)   1.04 (utils/cardiac_indices.py)
correction budget B           50 patches             50 (uqbench's)          50 (uqbench's)
patch order seed              0                      0                       0
bootstrap                     2,000, seed 0          2,000, seed 0           2,000, seed 0
============================  =====================  ======================  =========================

The last three are uqbench's board conventions (issue 26), the same in every preset: the correction-budget curve
and its AUCC@B, the permutation that orders random patches and breaks detector ties
(``uqbench.protocol.budget``), and the paired patient bootstrap of a board's intervals
(``uqbench.leaderboard.bootstrap``).

Definitions of each convention live where they are computed (``uqbench.protocol.detection``,
``calibration``, ``stats``, ``clinical``). ``--failure-preset``, ``--correction`` and ``--detector-training``
override one parameter of the chosen preset; an override is recorded by name and changes the hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from uqbench.protocol import detection, failures
from uqbench.protocol.calibration import RiskMeasure
from uqbench.protocol.detection import (
    CorrectionMode,
    DetectorTraining,
    FlagRule,
    FrocConvention,
    SliceApConvention,
)
from uqbench.protocol.stats import MannWhitney
from uqbench.records import fields_from_hashed, fields_to_json

PRESET_VERSION = 3
"""Bumped whenever this code changes what a preset parameter means; part of every hash. 2: outputs are scored
from their original-geometry files (failure labels from the written labels resampled onto the 1.4 mm grid as the
reference is, calibration in original geometry), so a run and ``uqbench evaluate`` of its files agree. 3: simulated
correction in original geometry (only the flagged patches' footprints change: correcting nothing keeps the
segmentation's Dice), the correction budget, patch order seed and bootstrap parameters."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Preset:
    """One protocol: the preset it started from, the parameters overridden, and every parameter's value."""

    name: str
    overrides: tuple[str, ...] = ()  # "parameter=value" for each parameter changed from the named preset
    failure_rule: failures.FailureRule
    correction: CorrectionMode
    flag: FlagRule  # a patch or slice is flagged at threshold t when its probability is > t or >= t
    operating_point: float = 0.5  # the threshold of detection totals and simulated correction
    detector_training: DetectorTraining
    froc: FrocConvention
    slice_ap: SliceApConvention
    curve_thresholds: int  # 101: 0.00, 0.01, ..., 1.00; otherwise that many evenly from 0 to 1
    risk: RiskMeasure
    mann_whitney: MannWhitney
    myocardial_density: float  # g/mL
    budget: int = 50  # B of AUCC@B: patches corrected per volume, at most (chosen: docs/measurements.md)
    order_seed: int = 0  # seeds each volume's permutation of its patches (random order, detector ties)
    bootstrap_resamples: int = 2000  # paired patient resamples of a board's intervals
    bootstrap_seed: int = 0

    def thresholds(self) -> np.ndarray:
        """The thresholds the FROC and precision-recall curves (and the authors' AP) are evaluated at."""
        t = np.linspace(0.0, 1.0, self.curve_thresholds)
        return np.round(t, 2) if self.curve_thresholds == 101 else t

    def flagged(self, probs: np.ndarray, threshold: float) -> np.ndarray:
        """Which probabilities are flagged at ``threshold`` under this preset's comparison."""
        return detection.flagged(probs, threshold, self.flag)

    def digest(self) -> str:
        """A stable hash of every parameter (the names excluded: same parameters, same hash)."""
        params = fields_to_json(self)
        params.pop("name"), params.pop("overrides")
        params["failure_rule"] = self.failure_rule.digest()
        blob = json.dumps({"preset_version": PRESET_VERSION, **params}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """The name with its overrides, e.g. ``seed-code+correction=patch``."""
        return "+".join((self.name, *self.overrides))

    def record(self) -> dict[str, Any]:
        """The preset as results record it: its parameters, names and hash."""
        return fields_to_json(self) | {"hash": self.digest(), "preset_version": PRESET_VERSION}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], where: str = "protocol") -> Preset:
        """The preset a record describes; ValueError naming ``where`` when it was written under another preset
        version or its hash does not match its parameters (edited by hand)."""
        preset: Preset = fields_from_hashed(cls, record, where, version=("preset_version", PRESET_VERSION),
                                            kind="protocol", label=lambda p: p.label)
        return preset


UQBENCH = Preset(name="uqbench", failure_rule=failures.PAPER, correction="patch", flag=">",
                 detector_training="out-of-fold", froc="pooled", slice_ap="exact-per-patient", curve_thresholds=101,
                 risk="error-rate", mann_whitney="two-sided", myocardial_density=1.05)
SANDER2020 = Preset(name="sander2020", failure_rule=failures.PAPER, correction="patch", flag=">",
                    detector_training="in-sample", froc="per-volume", slice_ap="exact-per-patient",
                    curve_thresholds=101, risk="error-count", mann_whitney="two-sided", myocardial_density=1.05)
SEED_CODE = Preset(name="seed-code", failure_rule=failures.SEED_CODE, correction="failures-only", flag=">=",
                   detector_training="in-sample", froc="per-volume", slice_ap="authors-40", curve_thresholds=40,
                   risk="error-count", mann_whitney="one-sided-legacy", myocardial_density=1.04)
PRESETS = {p.name: p for p in (UQBENCH, SANDER2020, SEED_CODE)}

def preset(name: str, *, failure_preset: str | None = None, correction: CorrectionMode | None = None,
           detector_training: DetectorTraining | None = None) -> Preset:
    """The named preset with the given parameters overridden (None: the preset's own); an override that changes
    a value is recorded in ``overrides``. ValueError naming the unknown preset otherwise."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}: expected one of {', '.join(PRESETS)}") from None
    out, overrides = base, []
    if failure_preset is not None and failure_preset != base.failure_rule.name:
        out = replace(out, failure_rule=failures.preset(failure_preset))
        overrides.append(f"failure-preset={failure_preset}")
    if correction is not None and correction != base.correction:
        out = replace(out, correction=correction)
        overrides.append(f"correction={correction}")
    if detector_training is not None and detector_training != base.detector_training:
        out = replace(out, detector_training=detector_training)
        overrides.append(f"detector-training={detector_training}")
    return replace(out, overrides=tuple(overrides))
