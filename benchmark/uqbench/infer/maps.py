"""The one way an uncertainty map is computed, whoever asks: MC inference (from running moments or stacked
samples), the run's maps stage (from stored moments) and ``uqbench evaluate`` (from saved probabilities).

A map with ``from_moments`` is computed from moments; one without it from the samples themselves, or, when all
there is is one pass, from that pass as a single sample. Whatever the map raises, or a map of the wrong shape,
is a MethodFault blamed on the uncertainty map.
"""

from __future__ import annotations

import numpy as np
import torch

from uqbench.api import MOMENTS, MomentMap, Moments, UncertaintyMap
from uqbench.errors import MethodFault


def map_of(umap: UncertaintyMap, *, moments: Moments | None = None, samples: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``umap`` of softmax ``samples`` [T, B, C, H, W], or of their running ``moments`` (exactly one given):
    the map [B, H, W], its shape checked."""
    if (moments is None) == (samples is None):
        raise ValueError("map_of: give the samples or their moments, not both")
    try:
        if samples is not None:
            unc, mean = umap(samples), samples[0]
        else:
            assert moments is not None
            mean = moments.mean
            if isinstance(umap, MomentMap):
                unc = umap.from_moments(moments)
            elif moments.samples == 1:
                unc = umap(moments.mean[None])
            else:
                raise MethodFault("uncertainty", f"has no from_moments, and its {moments.samples} samples were not "
                                                 "kept (only their moments)")
    except MethodFault:
        raise
    except Exception as exc:  # the map's own failure
        raise MethodFault("uncertainty", f"{type(exc).__name__}: {exc}") from exc
    check_map(unc, mean)
    return unc


def reads_mean_only(umap: UncertaintyMap) -> bool:
    """Whether ``umap`` is a map of the mean softmax alone (one pass, or moments that need nothing beyond the
    mean), so that saved class probabilities are all it needs (e.g. emap, maxprob; not bmap or mi)."""
    return umap.samples == 1 or (isinstance(umap, MomentMap) and not getattr(umap, "needs", MOMENTS))


def as_moments(stats: dict[str, np.ndarray], samples: int) -> Moments:
    """Stored statistics (``mean`` [Z, C, Y, X], optionally ``variance`` and ``mean_entropy``) as the Moments a
    map reads (on the CPU, float32). Statistics a deterministic pass did not store are those of one sample:
    variance 0 and the entropy of the mean."""
    mean = torch.from_numpy(stats["mean"])
    var = torch.from_numpy(stats["variance"]) if "variance" in stats else torch.zeros_like(mean)
    ent = (torch.from_numpy(stats["mean_entropy"]) if "mean_entropy" in stats
           else torch.special.entr(mean).sum(1))
    return Moments(samples=samples, mean=mean, variance=var, mean_entropy=ent)


def check_map(unc: torch.Tensor, mean: torch.Tensor) -> None:
    """MethodFault blaming the uncertainty map unless ``unc`` is [Z, Y, X] for a mean softmax [Z, C, Y, X]."""
    z, _, h, w = mean.shape
    if tuple(unc.shape) != (z, h, w):
        raise MethodFault("uncertainty", f"returned a map of shape {tuple(unc.shape)} for {z} slices of "
                                         f"{h} x {w}; expected {(z, h, w)}")
