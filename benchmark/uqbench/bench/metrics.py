"""`uqbench bench metrics`: our scoring and failure labels timed side by side with MedPy, MONAI and a
per-slice loop, on the same synthetic ACDC-sized volumes (or real ACDC references with synthetic errors).

Every figure is a ratio or a per-volume time measured in this one process, one implementation after the
other on identical inputs, after one warm-up volume; the largest HD difference against MedPy is printed
next to the speed so that a fast wrong answer cannot pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from uqbench.bench.baselines import budget_curve_loop, failure_map_loop
from uqbench.protocol import budget
from uqbench.protocol.failures import PAPER, FailureRule, apex_index, failure_map
from uqbench.protocol.metrics import FOREGROUND, largest_component, score
from uqbench.protocol.presets import UQBENCH

SHAPE = (10, 224, 224)
SPACING = (10.0, 1.4, 1.4)
IN_PLANE = ndimage.generate_binary_structure(3, 1) & np.array([0, 1, 0], bool)[:, None, None]


@dataclass(frozen=True, slots=True)
class Pair:
    """A predicted volume and its reference on one grid, with the voxel spacing [Z, Y, X] in mm."""

    pred: np.ndarray
    ref: np.ndarray
    spacing: tuple[float, float, float]


def heart(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """A reference: LV disc in a myocardial ring with an RV crescent beside it, shrinking towards the apex;
    the first and last slice unlabelled (above the base, below the apex)."""
    z, h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    cy, cx = h / 2 + rng.uniform(-10, 10), w / 2 + rng.uniform(-10, 10)
    ref = np.zeros(shape, np.uint8)
    for k in range(1, z - 1):
        scale = 1.0 - 0.6 * (k - 1) / max(1, z - 3)
        r_lv = 18 * scale * rng.uniform(0.9, 1.1)
        d = np.hypot(yy - cy, (xx - cx) * rng.uniform(0.9, 1.1))
        rv = (np.hypot(yy - cy, xx - (cx - 22 * scale)) < 20 * scale) & (d > r_lv + 6)
        ref[k][rv] = 1
        ref[k][d < r_lv + 6] = 2
        ref[k][d < r_lv] = 3
    return ref


def _errors(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    """A prediction: boundaries shifted by a voxel or two in places, islands, and the apical slice missed."""
    pred = ref.copy()
    for c in FOREGROUND:
        mask = ref == c
        grown = ndimage.binary_dilation(mask, IN_PLANE, iterations=int(rng.integers(1, 3)))
        noise = ndimage.gaussian_filter(rng.random(ref.shape), (0, 6, 6)) > 0.5
        pred[grown & noise & (pred == 0)] = c
        shrunk = mask & ~ndimage.binary_erosion(mask, np.ones((1, 3, 3), bool))
        pred[shrunk & ~noise & (rng.random(ref.shape) < 0.5)] = 0
    for _ in range(3):  # islands far from the heart
        z, y, x = rng.integers(1, ref.shape[0] - 1), rng.integers(5, 40), rng.integers(5, 40)
        pred[z, y:y + rng.integers(3, 9), x:x + rng.integers(3, 9)] = rng.integers(1, 4)
    pred[apex_index(ref)] = 0
    return pred


def synthetic(n: int, seed: int = 0) -> list[Pair]:
    """``n`` ACDC-sized volumes (10 x 224 x 224, spacing 10 x 1.4 x 1.4 mm) with realistic errors."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ref = heart(rng, SHAPE)
        out.append(Pair(_errors(rng, ref), ref, SPACING))
    return out


def acdc_pairs(root: Any, seed: int = 0) -> Iterator[Pair]:
    """Every real ACDC reference volume with synthetic errors as its prediction (original geometry)."""
    from uqbench.data.layout import iter_cases

    rng = np.random.default_rng(seed)
    for case in iter_cases(root):
        ref = np.asarray(case.labels, dtype=np.uint8)
        sz, sy, sx = (float(s) for s in case.spacing)
        yield Pair(_errors(rng, ref), ref, (sz, sy, sx))


def ours(p: Pair) -> dict[int, dict[str, float]]:
    """Our full scoring: largest component, Dice, HD, both HD95, ASSD for three classes."""
    return score(largest_component(p.pred), p.ref, spacing=p.spacing, where="bench")


def medpy_scores(p: Pair) -> dict[int, dict[str, float]]:
    """The same with MedPy's functions, one call per metric as its users write it."""
    from medpy.metric import binary

    pred = largest_component(p.pred)
    out = {}
    for c in FOREGROUND:
        a, b = pred == c, p.ref == c
        out[c] = {"dice": binary.dc(a, b), "hd": binary.hd(a, b, p.spacing), "hd95": binary.hd95(a, b, p.spacing),
                  "assd": binary.assd(a, b, p.spacing)}
    return out


def monai_scores(p: Pair) -> dict[int, dict[str, float]]:
    """The same with MONAI's metric functions on one-hot tensors."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    pred = largest_component(p.pred)
    onehot = [torch.from_numpy(np.stack([x == c for c in range(4)])[None]) for x in (pred, p.ref)]
    y_pred, y = onehot
    dice = compute_dice(y_pred, y, include_background=False)[0]
    hd = compute_hausdorff_distance(y_pred, y, spacing=p.spacing)[0]
    hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, spacing=p.spacing)[0]
    assd = compute_average_surface_distance(y_pred, y, symmetric=True, spacing=p.spacing)[0]
    return {c: {"dice": float(dice[c - 1]), "hd": float(hd[c - 1]), "hd95": float(hd95[c - 1]),
                "assd": float(assd[c - 1])} for c in FOREGROUND}


def _time(fn: Callable[[Pair], Any], pairs: list[Pair]) -> tuple[float, list[Any]]:
    fn(pairs[0])  # warm-up: imports, caches
    t0 = time.perf_counter()
    results = [fn(p) for p in pairs]
    return (time.perf_counter() - t0) / len(pairs), results


def available(module: str) -> bool:
    """Whether an optional comparison library can be imported."""
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def scoring(pairs: list[Pair]) -> dict[str, Any]:
    """Per-volume seconds of each implementation, ratios to ours and the largest HD difference to MedPy."""
    t_ours, r_ours = _time(ours, pairs)
    out: dict[str, Any] = {"volumes": len(pairs), "ours_s": t_ours}
    for name, fn in (("medpy", medpy_scores), ("monai", monai_scores)):
        if not available(name):
            out[f"{name}_s"] = None
            continue
        t, r = _time(fn, pairs)
        out[f"{name}_s"] = t
        out[f"{name}_ratio"] = t / t_ours
        out[f"{name}_max_hd_diff_mm"] = max(abs(a[c]["hd"] - b[c]["hd"]) for a, b in zip(r_ours, r, strict=True)
                                            for c in FOREGROUND)
    return out


def failure_labels(pairs: list[Pair], rule: FailureRule = PAPER) -> dict[str, Any]:
    """Per-volume seconds of the vectorised failure map against the per-slice, per-class loop."""
    t_fast, fast = _time(lambda p: failure_map(p.pred, p.ref, rule=rule), pairs)
    t_loop, slow = _time(lambda p: failure_map_loop(p.pred, p.ref, rule=rule), pairs)
    same = all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))
    return {"rule": rule.name, "ours_s": t_fast, "loop_s": t_loop, "ratio": t_loop / t_fast, "identical": same}


def budget_curves(pairs: list[Pair], budget_b: int = UQBENCH.budget) -> dict[str, Any]:
    """Per-volume seconds of the three correction-budget curves (detector, random and oracle orders, every
    patch) from per-patch counts, against correcting and re-scoring at each b = 0..B of each order."""
    def curves(p: Pair) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        fp = budget.footprint(p.ref.shape, p.ref.shape[1:], spacing=p.spacing, target=p.spacing[1])
        made = budget.volume_curves(fp, p.pred, p.ref, mode="patch", failures=None,
                                    rank=budget.permutation_rank(fp.patches, seed=0, patient="p", phase="ED"))
        probs = np.random.default_rng(0).random(fp.patches)
        return {kind: (order, made.dice(order)) for kind in ("detector", "random", "oracle")
                for order in [made.order(kind, probs)]}

    t_fast, fast = _time(curves, pairs)
    t_loop, slow = _time(lambda p: [budget_curve_loop(p.pred, p.ref, order, budget=budget_b)
                                    for order, _ in curves(p).values()], pairs)
    diff = max(float(np.abs(curve[:budget_b + 1] - loop).max())
               for made, loops in zip(fast, slow, strict=True)
               for (_, curve), loop in zip(made.values(), loops, strict=True))
    return {"ours_s": t_fast, "loop_s": t_loop, "ratio": t_loop / t_fast, "max_diff": diff, "budget": budget_b}


def score_all(pairs: Iterator[Pair]) -> dict[str, Any]:
    """Wall time to score every volume with our full scoring (reading excluded)."""
    total, n = 0.0, 0
    for p in pairs:
        t0 = time.perf_counter()
        ours(p)
        total += time.perf_counter() - t0
        n += 1
    return {"volumes": n, "total_s": total}
