"""cases.csv (one row per patient, phase and class) and detection.csv, and the statistics made from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from uqbench.api import CLASS_NAMES
from uqbench.errors import DataError
from uqbench.files import write_atomic
from uqbench.results.summary import METRICS, ByPhaseClass, DetectionTotals, Scores, Stat, Summary


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


def read_checked(folder: Path, summary: Summary) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``folder``'s cases.csv, and its detection.csv when the summary has detection results, each checked against
    the summary.json it goes with: DataError naming the file when it is unreadable or is not the table that
    summary was made from (another count of rows or volumes, another mean Dice: a truncated, edited or foreign
    file). What reads a results folder to draw or post it reads it through here."""
    path = folder / "cases.csv"
    cases = _read(path)
    need = {"patient", "phase", "class", "dice"}
    if not need <= set(cases.columns):
        raise DataError(f"{path}: lacks the column(s) {', '.join(sorted(need - set(cases.columns)))}")
    seg = summary.segmentation
    volumes = len(cases[["patient", "phase"]].drop_duplicates())
    foreground = len(CLASS_NAMES) - 1
    if volumes != seg.volumes or len(cases) != foreground * seg.volumes:
        raise DataError(f"{path}: {len(cases)} rows of {volumes} volumes, where summary.json scored {seg.volumes} "
                        f"volumes ({foreground * seg.volumes} rows): not the table of that summary")
    mean = float(cases["dice"].astype(float).mean())
    if abs(mean - seg.mean_foreground_dice) > 1e-6:  # the CSV holds 6 decimals
        raise DataError(f"{path}: mean Dice {mean:.6f}, where summary.json has {seg.mean_foreground_dice:.6f}: "
                        "not the table of that summary (edited?)")
    if summary.detection is None:
        return cases, None
    path = folder / "detection.csv"
    detection = _read(path)
    if len(detection) != summary.detection.volumes:
        raise DataError(f"{path}: {len(detection)} rows, where summary.json's detection scored "
                        f"{summary.detection.volumes} volumes: not the table of that summary")
    return cases, detection


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(f"{path}: missing (the run or evaluation did not finish)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
