"""Uncertainty maps: softmax samples [T, B, C, H, W] -> [B, H, W] in [0, 1]."""

from __future__ import annotations

import math
from typing import Any

from uqbench import Moments, Register, UncertaintyMap, hookimpl


def _entropy(mean: Any) -> Any:
    return -(mean * mean.clamp_min(1e-12).log()).sum(1)


def _mean_only(probs: Any) -> Moments:
    """The moments of stacked samples a map that reads only their mean needs."""
    return Moments(samples=probs.shape[0], mean=probs.float().mean(0), variance=None, mean_entropy=None)


class EntropyMap:
    """e-map: entropy of the mean softmax over the C classes, divided by log C (one deterministic pass)."""

    name = "emap"
    samples = 1
    needs: frozenset[str] = frozenset()

    def __call__(self, probs: Any) -> Any:
        return self.from_moments(_mean_only(probs))

    def from_moments(self, m: Moments) -> Any:
        return (_entropy(m.mean) / math.log(m.mean.shape[1])).clamp(0, 1)


class BayesianMap:
    """b-map (paper Eq. 1): mean over classes of the per-class sample std over T MC-dropout samples, in [0, 1].

    The std uses T - 1 in the denominator, as Eq. 1. It is divided by 0.5 * sqrt(T / (T - 1)), the largest
    std a probability can have across T samples, so the map lies in [0, 1] whatever T is. One sample (the
    paper's Table V, T = 1) shows no spread: the map is 0."""

    name = "bmap"
    samples = 10
    needs = frozenset({"variance"})

    def __call__(self, probs: Any) -> Any:
        t = probs.shape[0]
        if t < 2:
            return probs.new_zeros((probs.shape[1], *probs.shape[3:]))
        std = probs.float().std(0, unbiased=True)
        return (std.mean(1) / (0.5 * math.sqrt(t / (t - 1)))).clamp(0, 1)

    def from_moments(self, m: Moments) -> Any:
        """The same from running statistics: the unbiased variance is T / (T - 1) times the population one."""
        t = m.samples
        if t < 2:
            return m.mean.new_zeros((m.mean.shape[0], *m.mean.shape[2:]))
        assert m.variance is not None
        var = m.variance.clamp_min(0) * (t / (t - 1))
        return (var.sqrt().mean(1) / (0.5 * math.sqrt(t / (t - 1)))).clamp(0, 1)


class MutualInformation:
    """mi: mutual information between the prediction and the network weights over T MC-dropout samples,
    H(mean_t p_t) - mean_t H(p_t) (BALD), divided by log C so the map lies in [0, 1].

    It is the part of the predictive entropy that comes from disagreement between samples (epistemic);
    identical samples, and a single one, give 0."""

    name = "mi"
    samples = 10
    needs = frozenset({"mean_entropy"})

    def __call__(self, probs: Any) -> Any:
        p = probs.float()
        expected = -(p * p.clamp_min(1e-12).log()).sum(2).mean(0)
        return self.from_moments(Moments(samples=p.shape[0], mean=p.mean(0), variance=None, mean_entropy=expected))

    def from_moments(self, m: Moments) -> Any:
        assert m.mean_entropy is not None
        return ((_entropy(m.mean) - m.mean_entropy) / math.log(m.mean.shape[1])).clamp(0, 1)


class MaxProbability:
    """maxprob: 1 - the highest mean softmax probability over T MC-dropout samples, divided by its largest
    value 1 - 1/C (reached when every class is equally likely) so the map lies in [0, 1]."""

    name = "maxprob"
    samples = 10
    needs: frozenset[str] = frozenset()

    def __call__(self, probs: Any) -> Any:
        return self.from_moments(_mean_only(probs))

    def from_moments(self, m: Moments) -> Any:
        c = m.mean.shape[1]
        return ((1 - m.mean.max(1).values) / (1 - 1 / c)).clamp(0, 1)


@hookimpl
def register_uncertainty_maps(register: Register[UncertaintyMap]) -> None:
    register(EntropyMap)
    register(BayesianMap)
    register(MutualInformation)
    register(MaxProbability)
