"""The paired patient bootstrap behind a board's intervals and ranks (issue 26; the resampling of Zenk et al.'s
segmentation_failures_benchmark and fd-shifts' percentile intervals).

Every resample draws as many patients as the board has, with replacement, and keeps both phases of each drawn
patient; the same draws serve every row of the board, so two rows are compared on the same cases. A row posted
with several seeds draws its seeds with replacement too (from a generator of the bootstrap seed and the row's
name), and its value in a resample is the mean over the drawn seeds. Intervals are the 2.5th and 97.5th
percentiles of the resampled values. Ranks are competition ranks per resample (1 + the rows strictly better);
a row's median rank and its 95 % interval come from them. Shared ranks group the rows in the order of their full
data values: the best row shares its rank with the rows after it, down to the first whose 95 % interval of the
paired difference to it excludes 0; the next group starts with that row, and its rank counts the rows ranked
before it. A group is a run of that order, so a row never ranks below one of worse value: a row significantly
behind the best (two close variants of one model, whose paired differences are tight) would otherwise rank
below a worse but noisier row of another model that the bootstrap cannot tell from the best.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95

Statistic = Callable[[np.ndarray], np.ndarray]
"""A figure of one entry computed under volume weights: [R, V] weights (how often each volume is drawn in each of
R resamples, or one row of ones for the full data) -> [R] values."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Draws:
    """The patients of a board and how often each is drawn in each resample."""

    patients: list[str]
    counts: np.ndarray  # [R, P]
    seed: int

    def weights(self, volume_patients: Sequence[str]) -> np.ndarray:
        """[R, V] weights of volumes given by their patients (a patient's ED and ES are drawn together)."""
        column = {p: i for i, p in enumerate(self.patients)}
        out: np.ndarray = self.counts[:, [column[p] for p in volume_patients]].astype(np.float64)
        return out

    def seeds(self, row: str, n: int) -> np.ndarray:
        """[R, n] indices of the seeds a row of ``n`` seeds draws in each resample (all zero for one seed)."""
        rng = np.random.default_rng([self.seed, zlib.crc32(row.encode())])
        out: np.ndarray = rng.integers(0, n, size=(self.counts.shape[0], n))
        return out


def draw(patients: Sequence[str], *, resamples: int, seed: int) -> Draws:
    """``resamples`` draws of ``len(patients)`` patients with replacement, from ``seed``."""
    names = sorted(set(patients))
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(names), size=(resamples, len(names)))
    counts = np.zeros((resamples, len(names)), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(resamples), len(names)), picked.ravel()), 1)
    return Draws(patients=names, counts=counts, seed=seed)


def mean_of(values: Sequence[float]) -> Statistic:
    """The weighted mean of per-volume ``values``."""
    x = np.asarray(values, dtype=np.float64)

    def stat(w: np.ndarray) -> np.ndarray:
        out: np.ndarray = (w @ x) / w.sum(axis=1)
        return out
    return stat


@dataclass(frozen=True, slots=True, kw_only=True)
class Estimate:
    """A row's figure: its full-data value (the mean over seeds), resampled values, interval, and the spread of
    the seeds' own values (0 for one seed)."""

    value: float
    samples: np.ndarray  # [R]
    low: float
    high: float
    seed_sd: float
    seeds: int


def estimate(per_seed: Sequence[tuple[Statistic, Sequence[str]]], draws: Draws, *, row: str) -> Estimate:
    """A row's figure from one statistic per seed (with the patient of each volume it is computed over)."""
    full = np.array([stat(np.ones((1, len(patients))))[0] for stat, patients in per_seed])
    resampled = np.stack([stat(draws.weights(patients)) for stat, patients in per_seed])  # [S, R]
    chosen = draws.seeds(row, len(per_seed))  # [R, S]
    samples = resampled[chosen, np.arange(resampled.shape[1])[:, None]].mean(axis=1)
    low, high = interval(samples)
    return Estimate(value=float(full.mean()), samples=samples, low=low, high=high,
                    seed_sd=float(full.std(ddof=1)) if len(full) > 1 else 0.0, seeds=len(full))


def interval(samples: np.ndarray, *, whole: bool = False) -> tuple[float, float]:
    """The 95 % percentile interval. For whole-number samples (ranks) its ends are values some sample took, the
    2.5 % quantile taken downwards and the 97.5 % upwards, never one interpolated between two, such as 3.975."""
    tail = 50 * (1 - LEVEL)
    if whole:
        return (float(np.percentile(samples, tail, method="lower")),
                float(np.percentile(samples, 100 - tail, method="higher")))
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def resampled_ranks(samples: Sequence[np.ndarray], *, higher: bool) -> np.ndarray:
    """[rows, R] competition ranks per resample: 1 + the rows strictly better in that resample."""
    s = np.stack(samples) * (1 if higher else -1)
    out: np.ndarray = 1 + (s[None, :, :] > s[:, None, :]).sum(axis=1)
    return out


def rank_summary(samples: Sequence[np.ndarray], *, higher: bool) -> list[tuple[float, float, float]]:
    """Each row's median rank and its 95 % interval over resamples, whose ends are ranks some resample gave."""
    ranks = resampled_ranks(samples, higher=higher)
    return [(float(np.median(r)), *interval(r, whole=True)) for r in ranks]


def shared_ranks(estimates: Sequence[Estimate], *, higher: bool) -> list[int]:
    """Each row's shared rank (module docstring)."""
    sign = 1 if higher else -1
    left = sorted(range(len(estimates)), key=lambda i: -sign * estimates[i].value)
    out = [0] * len(estimates)
    placed = 0
    while left:
        top, size = left[0], 1
        while size < len(left) and _includes_zero(estimates[top].samples - estimates[left[size]].samples):
            size += 1
        for i in left[:size]:
            out[i] = placed + 1
        placed += size
        left = left[size:]
    return out


def _includes_zero(difference: np.ndarray) -> bool:
    low, high = interval(difference)
    return low <= 0 <= high
