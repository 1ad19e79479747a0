"""Segmentation metrics in original geometry, and the largest-component post-processing.

Empty structures: when both reference and prediction lack a class, Dice is 1 (nothing to find,
nothing found); when exactly one lacks it, Dice is 0. Summaries count both situations
(``empty_reference``, ``empty_prediction``) so that a missed structure never improves a mean silently.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FOREGROUND = (1, 2, 3)
SIX_CONNECTED = ndimage.generate_binary_structure(3, 1)


def check_pair(pred: np.ndarray, ref: np.ndarray, where: str) -> None:
    """Raise ValueError naming ``where`` if the two label maps cannot be compared."""
    if pred.shape != ref.shape:
        raise ValueError(f"{where}: prediction shape {pred.shape} differs from reference {ref.shape}")
    for name, arr in (("prediction", pred), ("reference", ref)):
        if arr.size and (arr.min() < 0 or arr.max() > 3):
            raise ValueError(f"{where}: {name} has label values outside 0..3")


def dice(pred: np.ndarray, ref: np.ndarray, label: int) -> float:
    """Dice of one class between two label maps (1.0 when both lack it)."""
    p, r = pred == label, ref == label
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / total


def largest_component(labels: np.ndarray) -> np.ndarray:
    """Keep, per foreground class, the largest 3-D 6-connected component; other voxels become background."""
    out = np.zeros_like(labels)
    for c in FOREGROUND:
        comp, n = ndimage.label(labels == c, SIX_CONNECTED)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        out[comp == int(sizes.argmax())] = c
    return out
