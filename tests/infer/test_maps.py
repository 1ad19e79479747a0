"""One way to compute a map (uqbench.infer.maps.map_of), whether the map has from_moments or not."""

from __future__ import annotations

import pytest
import torch

from uqbench.api import Moments
from uqbench.errors import MethodFault
from uqbench.infer.maps import as_moments, map_of, reads_mean_only
from uqbench.registry import registry


class _OnePass:
    """A one-pass map without the optional from_moments: 1 - the top probability."""

    name = "one-pass"
    samples = 1

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        return 1 - probs.mean(0).max(1).values


def _probs(t: int) -> torch.Tensor:
    return torch.softmax(torch.randn(t, 2, 4, 5, 6, generator=torch.Generator().manual_seed(0)), dim=2)


def test_a_map_without_from_moments_is_computed_from_its_single_pass() -> None:
    p = _probs(1)
    from_moments = map_of(_OnePass(), moments=as_moments({"mean": p[0].numpy()}, 1))
    assert torch.equal(from_moments, map_of(_OnePass(), samples=p))
    assert torch.equal(from_moments, 1 - p[0].max(1).values)


def test_a_map_without_from_moments_and_only_moments_of_many_samples_is_a_fault() -> None:
    p = _probs(3)
    m = Moments(samples=3, mean=p.mean(0), variance=p.var(0, unbiased=False), mean_entropy=None)
    with pytest.raises(MethodFault, match="has no from_moments, and its 3 samples were not kept"):
        map_of(_OnePass(), moments=m)


def test_a_map_of_the_wrong_shape_or_that_raises_is_blamed_on_the_map() -> None:
    class Bad(_OnePass):
        def __call__(self, probs: torch.Tensor) -> torch.Tensor:
            return probs[0, :, 0, :, :3]

    class Raises(_OnePass):
        def __call__(self, probs: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    with pytest.raises(MethodFault, match=r"uncertainty: returned a map of shape \(2, 5, 3\)"):
        map_of(Bad(), samples=_probs(1))
    with pytest.raises(MethodFault, match="uncertainty: RuntimeError: boom"):
        map_of(Raises(), samples=_probs(1))


@pytest.mark.parametrize(("name", "mean_only"), [("emap", True), ("maxprob", True), ("bmap", False), ("mi", False)])
def test_maps_of_the_mean_alone_are_those_saved_probabilities_can_give(name: str, mean_only: bool) -> None:
    assert reads_mean_only(registry().create("uncertainty", name)) is mean_only
    assert reads_mean_only(_OnePass())
