"""Straightforward implementations the fast protocol code is measured and tested against.

They follow the definitions literally, one slice and one class at a time, on the full grid: slow but
easy to read, which is what makes them a useful independent check.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from uqbench.protocol.failures import FailureRule
from uqbench.protocol.metrics import FOREGROUND


def failure_map_loop(pred: np.ndarray, ref: np.ndarray, *, rule: FailureRule, spacing: float = 1.4) -> np.ndarray:
    """Failure voxels computed slice by slice and class by class with plain scipy calls, the way the authors'
    code does it: a distance transform of the contour, minus the margin, kept as an integer when the rule
    truncates."""
    sampling = spacing if rule.unit == "mm" else 1.0
    structure = ndimage.generate_binary_structure(2, 1 if rule.connectivity == 4 else 2)
    labelled = [bool(ref[z].any()) for z in range(ref.shape[0])]
    apex = max((z for z, has in enumerate(labelled) if has), default=-1)
    out = np.zeros(ref.shape, dtype=bool)
    for z in range(ref.shape[0]):
        if not labelled[z] and rule.unlabelled == "all-errors":
            out[z] = pred[z] != ref[z]
            continue
        for c in FOREGROUND:
            p, r = pred[z] == c, ref[z] == c
            err = p != r
            if not err.any():
                continue
            if not r.any() or (z == apex and not rule.apical_tolerance):
                beyond = err.copy()
            else:
                edge = r ^ ndimage.binary_erosion(r, ndimage.generate_binary_structure(2, 1))
                dist = ndimage.distance_transform_edt(~edge, sampling=(sampling, sampling))
                excess = dist - np.where(r, rule.inside, rule.outside)
                beyond = err & ((np.trunc(excess) if rule.truncate else excess) > 0)
            minimum = rule.apical_min_cluster if z == apex else rule.min_cluster
            comp, n = ndimage.label(err, structure)
            for k in range(1, n + 1):
                member = comp == k
                if member.sum() < minimum:
                    continue
                if rule.mark == "beyond":
                    out[z] |= member & beyond
                elif (member & beyond).any():
                    out[z] |= member
    return out


def budget_curve_loop(pred: np.ndarray, ref: np.ndarray, order: np.ndarray, *, budget: int) -> np.ndarray:
    """D(0..budget) by correcting the first b patches of ``order`` (8 x 8, whole-patch correction, prediction and
    reference on one grid) and scoring Dice class by class again at every b."""
    _, y, x = pred.shape
    gy, gx = -(-y // 8), -(-x // 8)
    out = []
    for b in range(budget + 1):
        fixed = pred.copy()
        for patch in order[:b]:
            s, rest = divmod(int(patch), gy * gx)
            py, px = divmod(rest, gx)
            fixed[s, py * 8:(py + 1) * 8, px * 8:(px + 1) * 8] = ref[s, py * 8:(py + 1) * 8, px * 8:(px + 1) * 8]
        dice = []
        for c in FOREGROUND:
            p, r = fixed == c, ref == c
            total = int(p.sum() + r.sum())
            dice.append(1.0 if total == 0 else 2 * int((p & r).sum()) / total)
        out.append(float(np.mean(dice)))
    return np.array(out)
