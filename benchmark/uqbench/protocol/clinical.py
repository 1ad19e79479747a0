"""Clinical indices (paper section IV, Table II) and their agreement with the reference.

From the label maps in original geometry (voxel volume = product of the NIfTI spacing, mm^3):

- LV and RV end-diastolic and end-systolic volume (EDV, ESV): the LV cavity (label 3) and RV cavity
  (label 1) volume at ED and ES, in mL (1 mL = 1000 mm^3);
- ejection fraction EF = 100 * (EDV - ESV) / EDV, in %; undefined (NaN) when EDV is 0;
- LV myocardial mass: myocardium (label 2) volume at ED times the myocardial density, in g: 1.05 g/mL by
  default (ACDC, Bernard et al. 2018), 1.04 g/mL in the ``seed-code`` preset (the authors'
  utils/cardiac_indices.py).

Agreement over patients, automatic against reference (following Bernard et al. 2018): Pearson r, bias
(mean of automatic - reference) +- its sample sd (ddof 1), and mean absolute error. Patients whose index is
undefined on either side are left out and counted (``undefined``), never averaged as a number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MYOCARDIAL_DENSITY = 1.05  # g/mL, the default
LABELS = {"RV": 1, "MYO": 2, "LV": 3}
INDICES = {"lv_edv": "mL", "lv_esv": "mL", "lv_ef": "%", "rv_edv": "mL", "rv_esv": "mL", "rv_ef": "%",
           "lv_mass": "g"}


def volume_ml(voxels: int, spacing: Sequence[float]) -> float:
    """Volume in mL of ``voxels`` voxels of the given spacing in mm (1 mL = 1000 mm³)."""
    return voxels * float(np.prod(spacing)) / 1000.0


def _ef(edv: float, esv: float) -> float:
    return 100.0 * (edv - esv) / edv if edv > 0 else math.nan


def indices(ed: Mapping[str, float], es: Mapping[str, float], *, density: float = MYOCARDIAL_DENSITY
            ) -> dict[str, float]:
    """The seven indices of one patient from its class volumes in mL ({"RV", "MYO", "LV"}) at ED and ES,
    the myocardial mass at ``density`` g/mL."""
    return {"lv_edv": ed["LV"], "lv_esv": es["LV"], "lv_ef": _ef(ed["LV"], es["LV"]),
            "rv_edv": ed["RV"], "rv_esv": es["RV"], "rv_ef": _ef(ed["RV"], es["RV"]),
            "lv_mass": ed["MYO"] * density}


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """Automatic against reference values of one index over ``n`` patients (``undefined`` left out)."""

    n: int
    undefined: int
    r: float  # Pearson; NaN below 2 patients or without variation
    bias: float  # mean of automatic - reference
    sd: float  # sample sd of the differences
    mae: float


def agreement(auto: Sequence[float], ref: Sequence[float]) -> Agreement:
    """Pearson r, bias, sd of the differences and MAE of automatic against reference values."""
    a, r = np.asarray(auto, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.shape != r.shape:
        raise ValueError(f"clinical agreement: {a.size} automatic values against {r.size} reference values")
    ok = np.isfinite(a) & np.isfinite(r)
    a, r = a[ok], r[ok]
    n = int(a.size)
    undefined = int((~ok).sum())
    if n == 0:
        return Agreement(n=0, undefined=undefined, r=math.nan, bias=math.nan, sd=math.nan, mae=math.nan)
    d = a - r
    da, dr = a - a.mean(), r - r.mean()
    denom = math.sqrt(float((da * da).sum()) * float((dr * dr).sum()))
    return Agreement(n=n, undefined=undefined,
                     r=float((da * dr).sum() / denom) if n > 1 and denom > 0 else math.nan,
                     bias=float(d.mean()), sd=float(d.std(ddof=1)) if n > 1 else 0.0, mae=float(np.abs(d).mean()))
