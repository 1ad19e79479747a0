"""Which segmentation errors are failures an expert must correct (paper section V-B).

Computed per 2-D slice in the 1.4 mm grid, per class c in {RV, MYO, LV}, against the reference:

1. error voxels of c: where (prediction == c) differs from (reference == c);
2. tolerated: an error outside the reference structure c within ``outside`` voxels of it (Euclidean
   distance to the nearest voxel of c <= 3), or inside it within ``inside`` voxels of its boundary
   (distance to the nearest voxel not of c <= 2);
3. a non-tolerated error voxel is a failure when its 4-connected cluster of error voxels of c has at
   least ``min_cluster`` (10) voxels;
4. in the most apical slice that holds reference labels, non-tolerated errors are failures whatever
   the cluster size;
5. in slices with no reference label of any class (above the base, below the apex) every error voxel
   is a failure;
6. a voxel's failure label is the OR over classes.

Slice order: z = 0 is the base; the highest labelled slice is the apex. Further presets (the authors'
released code) and a versioned parameter hash come with the full protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from uqbench.protocol.metrics import FOREGROUND

FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True, slots=True)
class FailureRule:
    """Parameters of the failure definition (distances in voxels of the 1.4 mm grid)."""

    outside: float = 3.0
    inside: float = 2.0
    min_cluster: int = 10


PAPER = FailureRule()


def _slice_failures(pred: np.ndarray, ref: np.ndarray, apical: bool, rule: FailureRule) -> np.ndarray:
    out = np.zeros(pred.shape, dtype=bool)
    if not ref.any():
        return pred != ref  # rule 5
    for c in FOREGROUND:
        p, r = pred == c, ref == c
        err = p != r
        if not err.any():
            continue
        beyond = np.zeros_like(err)
        if r.any():
            dist_out = ndimage.distance_transform_edt(~r)  # to the nearest voxel of c
            dist_in = ndimage.distance_transform_edt(r)  # to the nearest voxel not of c
            beyond |= err & ~r & (dist_out > rule.outside)
            beyond |= err & r & (dist_in > rule.inside)
        else:
            beyond = err.copy()  # c absent from the reference: nothing to tolerate against
        if apical:
            out |= beyond  # rule 4
            continue
        comp, _ = ndimage.label(err, FOUR_CONNECTED)
        sizes = np.bincount(comp.ravel())
        out |= beyond & (sizes[comp] >= rule.min_cluster)
    return out


def failure_map(pred: np.ndarray, ref: np.ndarray, rule: FailureRule = PAPER) -> np.ndarray:
    """Boolean failure voxels [Z, Y, X] of a predicted volume against its reference (same grid)."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    labelled = np.flatnonzero(ref.reshape(ref.shape[0], -1).any(1))
    apex = int(labelled.max()) if labelled.size else -1
    return np.stack([_slice_failures(pred[z], ref[z], z == apex, rule) for z in range(ref.shape[0])])
