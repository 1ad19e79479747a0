"""cases.csv (one row per patient, phase and class) and detection.csv, and the summary made from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

METRICS = ("dice", "hd", "hd95", "hd95_directed_max", "assd")
"""Per-class metrics summarised (uqbench.protocol.metrics.score); distances in mm."""


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as CSV atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".part")
    pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6f")
    tmp.replace(path)


def _stats(frame: pd.DataFrame, column: str) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (phase, cls), g in frame.groupby(["phase", "class"], sort=True):
        v = g[column].astype(float)
        out.setdefault(str(phase), {})[str(cls)] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1
                                                    else 0.0, "n": int(len(v))}
    return out


def summarise(rows: list[dict[str, Any]], detection: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd of each metric per phase and class (and after simulated correction), empty counts,
    detection totals."""
    if not rows:
        raise ValueError("no case was scored: the case list is empty")
    frame = pd.DataFrame(rows)
    out: dict[str, Any] = {
        "cases": int(frame[["patient", "phase"]].drop_duplicates().shape[0]),
        **{metric: _stats(frame, metric) for metric in METRICS},
        "mean_foreground_dice": float(frame["dice"].mean()),
        "empty_reference": int((frame["reference_voxels"] == 0).sum()),
        "empty_prediction": int(((frame["predicted_voxels"] == 0) & (frame["reference_voxels"] > 0)).sum()),
    }
    if "dice_corrected" in frame and frame["dice_corrected"].notna().any():
        scored = frame[frame["dice_corrected"].notna()]
        out |= {f"{metric}_corrected": _stats(scored, f"{metric}_corrected") for metric in METRICS}
        out["mean_foreground_dice_corrected"] = float(scored["dice_corrected"].mean())
        out["mean_foreground_dice_before_correction"] = float(scored["dice"].mean())
    if detection:
        d = pd.DataFrame(detection)
        fp = d["flagged_patches"] - d["true_positive_patches"]
        out["detection"] = {
            "volumes": int(len(d)),
            "voxel_sensitivity": float(d["detected_failure_voxels"].sum() / max(1, d["failure_voxels"].sum())),
            "patch_recall": float(d["true_positive_patches"].sum() / max(1, d["failure_patches"].sum())),
            "patch_precision": float(d["true_positive_patches"].sum() / max(1, d["flagged_patches"].sum())),
            "false_positive_patches_per_volume": float(fp.mean()),
            "share_of_slices_with_failures": float(d["failure_slices"].sum() / max(1, d["slices"].sum())),
        }
    return out
