"""Simulated correction of a set of scored volumes in their original geometry: at the protocol's operating point,
and patch by patch along the correction budget (``uqbench.protocol.budget`` defines both), with the per-volume
values a board's intervals are drawn from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from uqbench.protocol import budget, detection
from uqbench.protocol.patches import expand
from uqbench.protocol.presets import Preset
from uqbench.results.summary import METRICS, BudgetCurves, VolumeValues
from uqbench.scoring.case import Volume, case_rows


def footprint(v: Volume, target: float) -> budget.Footprint:
    """Where the volume's grid patches lie in its original geometry (grid spacing ``target`` mm)."""
    shape = v.reference.shape
    return budget.footprint((shape[0], shape[1], shape[2]), (v.prediction_grid.shape[1], v.prediction_grid.shape[2]),
                            spacing=v.spacing, target=target)


def fixed(v: Volume, flags: np.ndarray, *, protocol: Preset, fp: budget.Footprint) -> np.ndarray:
    """The volume's original-geometry labels after correcting the flagged patches (``fp``: its footprint)."""
    return budget.corrected(fp, v.prediction, v.reference, flags=flags, mode=protocol.correction, failures=v.failures)


def curves_of(v: Volume, *, protocol: Preset, target: float) -> budget.VolumeCurves:
    """The volume's correction-budget counts under the protocol's correction mode and patch permutation."""
    fp = footprint(v, target)
    return budget.volume_curves(fp, v.prediction, v.reference, mode=protocol.correction, failures=v.failures,
                                rank=budget.permutation_rank(fp.patches, seed=protocol.order_seed,
                                                             patient=v.patient, phase=v.phase))


def correct_volumes(volumes: Sequence[Volume], rows: list[dict[str, Any]], *, protocol: Preset, target: float
                    ) -> list[dict[str, Any]]:
    """Simulated correction of the patches flagged at the protocol's operating point (p > 0.5, or >= 0.5);
    corrected metrics join ``rows``, and one detection row per volume is returned."""
    corrected: dict[tuple[str, str, str], dict[str, Any]] = {}
    detection_rows = []
    for v in volumes:
        assert v.patch_probs is not None
        flags = protocol.flagged(v.patch_probs, protocol.operating_point)
        for r in case_rows(v, fixed(v, flags, protocol=protocol, fp=footprint(v, target))):
            corrected[(v.patient, v.phase, r["class"])] = r
        fail_patches = detection.voxels_per_patch(v.failures) > 0
        mask = np.stack([expand(f, v.failures.shape[1:]) for f in flags])
        detection_rows.append({
            "patient": v.patient, "phase": v.phase, "fold": v.fold, "slices": int(v.failures.shape[0]),
            "failure_slices": int(v.failures.any((1, 2)).sum()),
            "failure_voxels": int(v.failures.sum()), "detected_failure_voxels": int((v.failures & mask).sum()),
            "failure_patches": int(fail_patches.sum()), "flagged_patches": int(flags.sum()),
            "true_positive_patches": int((fail_patches & flags).sum())})
    for r in rows:
        fixed_row = corrected.get((r["patient"], r["phase"], r["class"]))
        if fixed_row:
            for metric in (*METRICS, "predicted_voxels", "predicted_ml"):
                r[f"{metric}_corrected"] = fixed_row[metric]
    return detection_rows


def volume_score(v: Volume) -> float | None:
    """The volume's uncertainty score for the volume-level risk-coverage: its map's mean over the voxels it
    predicts as foreground on the grid (over every voxel when it predicts none); None without a map."""
    if not v.uncertainty.size:
        return None
    fg = v.prediction_grid > 0
    u = v.uncertainty.astype(np.float64)
    return float(u[fg].mean() if fg.any() else u.mean())


def per_volume(volumes: Sequence[Volume], rows: Sequence[dict[str, Any]], *, protocol: Preset, target: float
               ) -> tuple[list[VolumeValues], BudgetCurves]:
    """Each volume's headline values (segmented Dice and HD, uncertainty score, and the correction budget's
    AUCC under the detector's, random and oracle orders) and their mean curves over b = 0..B."""
    by_volume: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_volume.setdefault((r["patient"], r["phase"]), []).append(r)
    B, out = protocol.budget, []
    curves: dict[str, list[np.ndarray]] = {"detector": [], "random": [], "oracle": []}
    for v in volumes:
        made = curves_of(v, protocol=protocol, target=target)
        random, oracle = made.dice(made.order("random")), made.dice(made.order("oracle"))
        curves["random"].append(budget.up_to(random, B))
        curves["oracle"].append(budget.up_to(oracle, B))
        mine = by_volume[(v.patient, v.phase)]
        values = VolumeValues(patient=v.patient, phase=v.phase, fold=v.fold,
                              dice=float(np.mean([r["dice"] for r in mine])),
                              hd=float(np.mean([r["hd"] for r in mine])), uncertainty=volume_score(v),
                              aucc_random=budget.aucc(random, B), aucc_oracle=budget.aucc(oracle, B))
        if v.patch_probs is not None:
            curve = made.dice(made.order("detector", v.patch_probs))
            flags = protocol.flagged(v.patch_probs, protocol.operating_point)
            k = int(flags.sum())
            clean = detection.voxels_per_patch(v.failures) == 0
            values = replace(values, aucc=budget.aucc(curve, B), flagged=k, false_positives=int((flags & clean).sum()),
                             dice_flagged=budget.at(curve, k), dice_random_flagged=budget.at(random, k))
            curves["detector"].append(budget.up_to(curve, B))
        out.append(values)
    mean = {k: np.mean(c, axis=0).tolist() if c else [] for k, c in curves.items()}
    return out, BudgetCurves(budget=B, mode=protocol.correction, detector=mean["detector"], random=mean["random"],
                             oracle=mean["oracle"])
