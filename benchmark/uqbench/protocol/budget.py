"""The correction-budget curve (uqbench's ranking of detectors; issue 26), simulated correction in original
geometry, and the volume-level risk-coverage of the uncertainty board.

Simulated correction (paper section V-C) acts on the detector's 8 x 8 patches of the 1.4 mm grid; a volume is
scored in its original geometry. Each original voxel belongs to the patch of its nearest grid voxel (the grid
and the original share their centre, as ``uqbench.data.preprocess`` resamples), so a flagged patch covers a
footprint of original voxels, and the footprints of a slice's patches tile it. Correcting a patch replaces the
prediction by the reference on its footprint (``patch``), or only on the failure voxels there (``failures-only``,
the failure map read through the same nearest-voxel footprint); every other voxel keeps its original-geometry
prediction, so correcting nothing gives back the segmentation's own Dice exactly.

The curve of one volume: its patches are put in an order and corrected one by one; D(b) is the mean Dice over
RV, MYO and LV after the first b (each class's Dice 2TP / (2TP + FP + FN), 1 when the class is absent from both,
as ``uqbench.protocol.metrics.dice``). Only voxels whose label a correction changes move the counts: a voxel
with reference c and prediction d != c turns an FN of c into a TP and removes an FP of d, so the curve is kept
by per-patch counts and cumulative sums. AUCC@B is the mean of D(0), ..., D(B) (D stays at its last value past
the volume's patch count). Orders:

- ``detector``: patch probability, highest first, ties in the order of the protocol's seeded permutation;
- ``random``: the seeded permutation itself (so a detector returning a constant is exactly random);
- ``oracle``: how many voxels the patch's correction changes, most first, ties again by the permutation.

The permutation is drawn per volume from the preset's ``order_seed`` and the volume's patient and phase, so
it is the same for every method scored on that volume.

Volume-level risk-coverage (Zenk et al.'s image-level failure detection, the uncertainty board's ranking):
each volume has one uncertainty score and a risk 1 - D(0); volumes are kept most certain first, and the
selective risk at k kept volumes is their mean risk; AURC is the mean of it over k = 1..N. Volumes with tied
scores are kept together in expectation: inside a tied group the cumulative risk grows linearly, which is its
mean over every order of the group, so a constant score has AURC equal to the mean risk. e-AURC subtracts the
AURC of the volumes ordered by risk itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from uqbench.api import PATCH
from uqbench.protocol.detection import CorrectionMode
from uqbench.protocol.patches import grid_shape

FOREGROUND = (1, 2, 3)
Order = Literal["detector", "random", "oracle"]


def nearest_grid_index(n_original: int, n_grid: int, step: float) -> np.ndarray:
    """For each original voxel along one axis, the index of its nearest grid voxel: centres aligned, ``step``
    grid voxels per original voxel (original spacing / grid spacing), clamped to the grid."""
    pos = (n_grid - 1) / 2 + (np.arange(n_original) - (n_original - 1) / 2) * step
    out: np.ndarray = np.clip(np.floor(pos + 0.5), 0, n_grid - 1).astype(np.int64)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Footprint:
    """Where each original voxel lies on the grid: its grid row and column, and its patch's index in the volume
    (slice z, patch row py, patch column px: z * gy * gx + py * gx + px)."""

    rows: np.ndarray  # [Y] grid row of each original row
    cols: np.ndarray  # [X]
    patch: np.ndarray  # [Z, Y, X] int64
    patches: int  # Z * gy * gx


def footprint(original_shape: tuple[int, int, int], grid_yx: tuple[int, int], *,
              spacing: tuple[float, float, float], target: float) -> Footprint:
    """The footprint of every patch of a volume's grid (``grid_yx`` in-plane) on its original geometry."""
    z, y, x = original_shape
    rows = nearest_grid_index(y, grid_yx[0], spacing[1] / target)
    cols = nearest_grid_index(x, grid_yx[1], spacing[2] / target)
    gy, gx = grid_shape(grid_yx, PATCH)
    in_slice = (rows // PATCH)[:, None] * gx + (cols // PATCH)[None, :]
    patch = np.arange(z, dtype=np.int64)[:, None, None] * (gy * gx) + in_slice[None]
    return Footprint(rows=rows, cols=cols, patch=patch, patches=z * gy * gx)


def correctable(fp: Footprint, pred: np.ndarray, ref: np.ndarray, *, mode: CorrectionMode,
                failures: np.ndarray | None) -> np.ndarray:
    """Original voxels a correction of their patch would change: wrong, and (``failures-only``) a failure voxel
    of the grid's failure map [Z, gy*, gx*] through the footprint."""
    wrong: np.ndarray = pred != ref
    if mode == "failures-only":
        if failures is None:
            raise ValueError("correction 'failures-only' needs the failure map")
        wrong &= failures[:, fp.rows[:, None], fp.cols[None, :]]
    elif mode != "patch":
        raise ValueError(f"unknown correction mode {mode!r}")
    return wrong


def corrected(fp: Footprint, pred: np.ndarray, ref: np.ndarray, *, flags: np.ndarray, mode: CorrectionMode,
              failures: np.ndarray | None) -> np.ndarray:
    """Original-geometry labels after correcting the flagged patches ([Z, gy, gx] bool)."""
    fix = correctable(fp, pred, ref, mode=mode, failures=failures) & flags.ravel()[fp.patch]
    return np.where(fix, ref, pred)


def dice_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Dice per class (last axis) from counts: 2TP / (2TP + FP + FN), 1 where the denominator is 0."""
    den = 2 * tp + fp + fn
    out: np.ndarray = np.where(den > 0, 2 * tp / np.maximum(den, 1), 1.0)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeCurves:
    """One volume's correction-budget ingredients: per patch, how correcting it moves TP, FP and FN of each
    foreground class and how many voxels it changes; the counts before any correction."""

    tp: np.ndarray  # [3] before correction
    fp: np.ndarray
    fn: np.ndarray
    gain_tp: np.ndarray  # [patches, 3] TP gained (FN lost) by correcting the patch
    loss_fp: np.ndarray  # [patches, 3] FP removed
    changed: np.ndarray  # [patches] voxels whose label changes
    rank: np.ndarray  # [patches] each patch's position in the seeded permutation

    def dice(self, order: np.ndarray) -> np.ndarray:
        """D(b) for b = 0..patches when the patches are corrected in ``order``."""
        gain = np.vstack([np.zeros((1, 3)), np.cumsum(self.gain_tp[order], axis=0)])
        loss = np.vstack([np.zeros((1, 3)), np.cumsum(self.loss_fp[order], axis=0)])
        out: np.ndarray = dice_from_counts(self.tp + gain, self.fp - loss, self.fn - gain).mean(axis=1)
        return out

    def order(self, kind: Order, probs: np.ndarray | None = None) -> np.ndarray:
        """The patch order of ``kind`` (``detector`` needs the patch probabilities)."""
        if kind == "random":
            return np.argsort(self.rank, kind="stable")
        if kind == "oracle":
            return np.lexsort((self.rank, -self.changed))
        if probs is None:
            raise ValueError("the detector's order needs its patch probabilities")
        return np.lexsort((self.rank, -probs.ravel().astype(np.float64)))


def permutation_rank(patches: int, *, seed: int, patient: str, phase: str) -> np.ndarray:
    """Each patch's position in the protocol's permutation of a volume's patches (the same for every method)."""
    rng = np.random.default_rng([seed, zlib.crc32(f"{patient}\0{phase}".encode())])
    rank = np.empty(patches, dtype=np.int64)
    rank[rng.permutation(patches)] = np.arange(patches)
    return rank


def volume_curves(fp: Footprint, pred: np.ndarray, ref: np.ndarray, *, mode: CorrectionMode,
                  failures: np.ndarray | None, rank: np.ndarray) -> VolumeCurves:
    """The counts the curve is made of, for one volume in original geometry."""
    fix = correctable(fp, pred, ref, mode=mode, failures=failures)
    where, p, r = fp.patch[fix], pred[fix], ref[fix]
    gain = np.stack([np.bincount(where[r == c], minlength=fp.patches) for c in FOREGROUND], axis=1)
    loss = np.stack([np.bincount(where[p == c], minlength=fp.patches) for c in FOREGROUND], axis=1)
    confusion = np.bincount(pred.ravel().astype(np.int64) * 4 + ref.ravel(), minlength=16).reshape(4, 4)
    tp = np.diag(confusion)[1:].astype(np.float64)  # rows: predicted class, columns: reference class
    fpos, fn = confusion.sum(axis=1)[1:] - tp, confusion.sum(axis=0)[1:] - tp
    return VolumeCurves(tp=tp, fp=fpos, fn=fn, gain_tp=gain.astype(np.float64), loss_fp=loss.astype(np.float64),
                        changed=np.bincount(where, minlength=fp.patches), rank=rank)


def at(curve: np.ndarray, b: int) -> float:
    """D(b), which stays at its last value past the volume's patches."""
    return float(curve[min(b, len(curve) - 1)])


def up_to(curve: np.ndarray, budget: int) -> np.ndarray:
    """D(0), ..., D(budget), the curve held at its last value past the volume's patches."""
    out: np.ndarray = curve[np.minimum(np.arange(budget + 1), len(curve) - 1)]
    return out


def aucc(curve: np.ndarray, budget: int) -> float:
    """AUCC@B: the mean of D(0), ..., D(B)."""
    return float(up_to(curve, budget).mean())


def normalised(value: float, random: float, oracle: float) -> float:
    """(value - random) / (oracle - random): 0 for the random order, 1 for the oracle's; NaN when they agree."""
    span = oracle - random
    return (value - random) / span if span > 0 else float("nan")


def selective_aurc(scores: Sequence[float] | np.ndarray, risks: Sequence[float] | np.ndarray) -> float:
    """Volume-level AURC: mean over k = 1..N of the mean risk of the k lowest scores (ties in expectation)."""
    s, r = np.asarray(scores, dtype=np.float64), np.asarray(risks, dtype=np.float64)
    if s.size == 0:
        raise ValueError("volume risk-coverage: the case list is empty")
    order = np.argsort(s, kind="stable")
    s, r = s[order], r[order]
    cum = np.r_[0.0, np.cumsum(r)]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]) + 1, s.size]  # the end of each tied group
    starts = np.r_[0, ends[:-1]]
    k = np.arange(1, s.size + 1)
    group_end = ends[np.searchsorted(ends, k, side="left")]
    group_start = starts[np.searchsorted(ends, k, side="left")]
    frac = (k - group_start) / (group_end - group_start)
    expected = cum[group_start] + frac * (cum[group_end] - cum[group_start])
    return float(np.mean(expected / k))


def excess_aurc(scores: Sequence[float] | np.ndarray, risks: Sequence[float] | np.ndarray) -> float:
    """e-AURC: the volume-level AURC minus that of the volumes ordered by their own risk."""
    return selective_aurc(scores, risks) - selective_aurc(risks, risks)
