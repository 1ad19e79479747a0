"""`uqbench bench budget`: the correction-budget curves of finished runs far past their preset's B, to choose B
by measurement (the oracle order's curve should still be rising at B: a budget it has already spent would rank
every detector by the same plateau).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from uqbench.protocol import budget
from uqbench.protocol.presets import Preset
from uqbench.scoring.case import Volume
from uqbench.scoring.correction import curves_of


@dataclass(frozen=True, slots=True, kw_only=True)
class Curves:
    """Mean D(b) over a run's volumes for b = 0..up_to, in the oracle, random and detector orders."""

    oracle: np.ndarray
    random: np.ndarray
    detector: np.ndarray | None  # None: the run had no detector
    volumes: int
    patches_per_volume: float


def curves(volumes: Sequence[Volume], *, protocol: Preset, target: float, up_to: int) -> Curves:
    """The mean curves of ``volumes`` under ``protocol``'s correction mode and permutation seed."""
    made: dict[str, list[np.ndarray]] = {"oracle": [], "random": [], "detector": []}
    patches = []
    for v in volumes:
        c = curves_of(v, protocol=protocol, target=target)
        patches.append(len(c.rank))
        for kind in ("oracle", "random", "detector"):
            if kind == "detector" and v.patch_probs is None:
                continue
            made[kind].append(budget.up_to(c.dice(c.order(kind, v.patch_probs)), up_to))
    return Curves(oracle=np.mean(made["oracle"], axis=0), random=np.mean(made["random"], axis=0),
                  detector=np.mean(made["detector"], axis=0) if made["detector"] else None, volumes=len(volumes),
                  patches_per_volume=float(np.mean(patches)))
