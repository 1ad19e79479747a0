"""cases.csv (one row per patient, phase and class) and detection.csv, and the statistics made from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from uqbench.files import write_atomic
from uqbench.results.summary import METRICS, ByPhaseClass, DetectionTotals, Scores, Stat


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as CSV atomically (a reader never sees half a file)."""
    write_atomic(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6f"))


def _stats(frame: pd.DataFrame, column: str) -> ByPhaseClass:
    out: ByPhaseClass = {}
    for (phase, cls), g in frame.groupby(["phase", "class"], sort=True):
        v = g[column].astype(float)
        out.setdefault(str(phase), {})[str(cls)] = Stat(mean=float(v.mean()),
                                                        sd=float(v.std(ddof=1)) if len(v) > 1 else 0.0, n=len(v))
    return out


def scores(rows: list[dict[str, Any]], *, corrected: bool = False) -> Scores:
    """Mean and sd of each metric per phase and class, as segmented or (``corrected``) after simulated
    correction (the rows must then all have been corrected)."""
    if not rows:
        raise ValueError("no case was scored: the case list is empty")
    frame = pd.DataFrame(rows)
    suffix = "_corrected" if corrected else ""
    by = {metric: _stats(frame, metric + suffix) for metric in METRICS}
    return Scores(volumes=int(frame[["patient", "phase"]].drop_duplicates().shape[0]), dice=by["dice"], hd=by["hd"],
                  hd95=by["hd95"], hd95_directed_max=by["hd95_directed_max"], assd=by["assd"],
                  mean_foreground_dice=float(frame["dice" + suffix].mean()))


def empty_counts(rows: list[dict[str, Any]]) -> tuple[int, int]:
    """(class volumes with an empty reference, class volumes predicted empty where the reference is not)."""
    frame = pd.DataFrame(rows)
    return (int((frame["reference_voxels"] == 0).sum()),
            int(((frame["predicted_voxels"] == 0) & (frame["reference_voxels"] > 0)).sum()))


def detection_totals(detection: list[dict[str, Any]]) -> DetectionTotals:
    """The operating point's totals over the rows of detection.csv."""
    d = pd.DataFrame(detection)
    fp = d["flagged_patches"] - d["true_positive_patches"]
    return DetectionTotals(
        volumes=len(d),
        voxel_sensitivity=float(d["detected_failure_voxels"].sum() / max(1, d["failure_voxels"].sum())),
        patch_recall=float(d["true_positive_patches"].sum() / max(1, d["failure_patches"].sum())),
        patch_precision=float(d["true_positive_patches"].sum() / max(1, d["flagged_patches"].sum())),
        false_positive_patches_per_volume=float(fp.mean()),
        share_of_slices_with_failures=float(d["failure_slices"].sum() / max(1, d["slices"].sum())))
