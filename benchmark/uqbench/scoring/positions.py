"""Where in the heart a segmentation errs: each structure scored by slice position (basal, mid, apical).

A 2-D network labels one short-axis slice at a time, and its errors gather at the ends of the heart (paper
section I: the largest inaccuracies lie in the most basal and apical slices; section VI: implausible
segmentations at the base). This breakdown makes that measurable for any run or folder of predictions, in
original geometry, from the same volumes the case scores come from.

Definitions (ours; checked on hand-made volumes in tests/test_positions.py):

- The heart's slices are those where the reference labels any structure; the base is the end of that range
  whose half holds more reference LV cavity (label 3) than the other half (the LV cavity narrows towards the
  apex), the first slice on a tie. A slice at relative position t (0 at the base, 1 at the apex; 0 for a heart
  of one slice) is ``basal`` for t < 1/3, ``mid`` for t <= 2/3, else ``apical``; slices outside the range are
  ``beyond`` (anything labelled there is wrong).
- Per case, structure and position: the reference, predicted and overlapping volume (mL); ``extra``, what is
  predicted in slices whose reference lacks the structure (slices and mL); ``missed``, the slices whose reference
  holds the structure and the prediction does not.
- :func:`position_table` pools those over cases: Dice from the summed volumes, the share of the predicted volume
  that is extra, and the mean over cases of the per-case Dice with and without the extra voxels (an oracle that
  removes only the slice-level false positives, a bound on what deciding "is the structure in this slice" right
  would gain).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from uqbench.api import CLASS_NAMES
from uqbench.protocol.clinical import volume_ml

POSITIONS = ("basal", "mid", "apical", "beyond")
LV = 3  # the LV cavity's label (uqbench.api.CLASS_NAMES)


def slice_positions(reference: np.ndarray) -> list[str]:
    """Each slice's position (module docstring) of a reference label map [Z, Y, X]."""
    holds = np.flatnonzero((reference > 0).any(axis=(1, 2)))
    z = reference.shape[0]
    if not len(holds):
        return ["beyond"] * z
    lo, hi = int(holds[0]), int(holds[-1])
    lv = (reference == LV).sum(axis=(1, 2))
    span = hi - lo
    first_half, second_half = lv[lo:lo + span // 2 + 1].sum(), lv[hi - span // 2:hi + 1].sum()
    base_first = first_half >= second_half
    out = []
    for k in range(z):
        if k < lo or k > hi:
            out.append("beyond")
            continue
        t = ((k - lo) if base_first else (hi - k)) / span if span else 0.0
        out.append("basal" if t < 1 / 3 else "mid" if t <= 2 / 3 else "apical")
    return out


def slice_rows(*, patient: str, phase: str, fold: int, reference: np.ndarray, prediction: np.ndarray,
               spacing: Sequence[float]) -> list[dict[str, Any]]:
    """One row per structure and position of one case (label maps [Z, Y, X] in original geometry)."""
    where = slice_positions(reference)
    rows = []
    for cls in range(1, len(CLASS_NAMES)):
        ref, pred = reference == cls, prediction == cls
        ref_n, pred_n, both_n = ref.sum(axis=(1, 2)), pred.sum(axis=(1, 2)), (ref & pred).sum(axis=(1, 2))
        for position in POSITIONS:
            at = np.array([w == position for w in where])
            extra = at & (ref_n == 0) & (pred_n > 0)
            rows.append({"patient": patient, "phase": phase, "fold": fold, "class": CLASS_NAMES[cls],
                         "position": position, "slices": int(at.sum()),
                         "reference_slices": int((at & (ref_n > 0)).sum()),
                         "predicted_slices": int((at & (pred_n > 0)).sum()),
                         "extra_slices": int(extra.sum()),
                         "missed_slices": int((at & (ref_n > 0) & (pred_n == 0)).sum()),
                         "reference_ml": volume_ml(int(ref_n[at].sum()), spacing),
                         "predicted_ml": volume_ml(int(pred_n[at].sum()), spacing),
                         "overlap_ml": volume_ml(int(both_n[at].sum()), spacing),
                         "extra_ml": volume_ml(int(pred_n[extra].sum()), spacing)})
    return rows


def _dice(overlap: float, a: float, b: float, *, empty: float = float("nan")) -> float:
    """Dice from volumes; ``empty`` where neither holds anything."""
    return 2 * overlap / (a + b) if a + b > 0 else empty


def position_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per phase, structure and position (and ``all`` positions): the cases' rows pooled (module docstring).
    ``cases`` counts those whose reference or prediction holds the structure there; the per-case means skip
    the others."""
    out = []
    phases = sorted({r["phase"] for r in rows})
    for phase in phases:
        for cls in CLASS_NAMES[1:]:
            mine = [r for r in rows if r["phase"] == phase and r["class"] == cls]
            for position in (*POSITIONS, "all"):
                at = mine if position == "all" else [r for r in mine if r["position"] == position]
                per_case: dict[tuple[str, int], list[float]] = {}
                for r in at:  # sum a case's positions for "all"
                    s = per_case.setdefault((r["patient"], r["fold"]), [0.0] * 4)
                    for i, k in enumerate(("overlap_ml", "reference_ml", "predicted_ml", "extra_ml")):
                        s[i] += r[k]
                held = [s for s in per_case.values() if s[1] + s[2] > 0]
                ref, pred, both, extra = (sum(r[k] for r in at) for k in
                                          ("reference_ml", "predicted_ml", "overlap_ml", "extra_ml"))
                out.append({"phase": phase, "class": cls, "position": position, "cases": len(held),
                            "slices": sum(r["slices"] for r in at),
                            "reference_slices": sum(r["reference_slices"] for r in at),
                            "extra_slices": sum(r["extra_slices"] for r in at),
                            "cases_with_extra": sum(1 for s in per_case.values() if s[3] > 0),
                            "missed_slices": sum(r["missed_slices"] for r in at),
                            "reference_ml": ref, "predicted_ml": pred, "dice_pooled": _dice(both, ref, pred),
                            "extra_share": extra / pred if pred > 0 else float("nan"),
                            "mean_dice": float(np.mean([_dice(s[0], s[1], s[2]) for s in held]))
                            if held else float("nan"),
                            "mean_dice_without_extra": float(np.mean([_dice(s[0], s[1], s[2] - s[3], empty=1.0)
                                                                      for s in held])) if held else float("nan")})
    return out
