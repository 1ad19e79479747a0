"""Every registered method, built-in or installed, meets its kind's contract (timm-style parametrisation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from uqbench.registry import build_registry, registry
from uqbench.testing import (
    DetectorContract,
    check_dataset,
    check_detector,
    check_loss,
    check_sampler,
    check_segmenter,
    check_uncertainty_map,
)

NAMES = build_registry()  # collected once for parametrisation (UQBENCH_PLUGINS=uqbench, set in conftest)
# trained detectors: a few steps are enough for the contract
SHORT = {"sresnet": "sresnet:20", "sresnet-fnfp": "sresnet-fnfp:20"}


@pytest.mark.parametrize("name", NAMES.names("segmenter"))
def test_segmenter_contract(name: str) -> None:
    check_segmenter(registry().create("segmenter", name))


@pytest.mark.parametrize("name", NAMES.names("loss"))
def test_loss_contract(name: str) -> None:
    check_loss(registry().create("loss", name))


@pytest.mark.parametrize("name", [*NAMES.names("sampler"), "ensemble:3", "ensemble:2:mc"])
def test_sampler_contract(name: str) -> None:
    check_sampler(registry().create("sampler", name))


@pytest.mark.parametrize("name", NAMES.names("uncertainty"))
def test_uncertainty_map_contract(name: str) -> None:
    check_uncertainty_map(registry().create("uncertainty", name))


@pytest.mark.parametrize("name", NAMES.names("detector"))
def test_detector_contract(name: str, tmp_path: Path) -> None:
    check_detector(registry().create("detector", SHORT.get(name, name)), tmp_path)


@pytest.mark.parametrize("name", NAMES.names("dataset"))
def test_dataset_contract(name: str, tiny_phantom: Path, nnunet_phantom: Path) -> None:
    check_dataset(registry().create("dataset", name, nnunet_phantom if name == "nnunet" else tiny_phantom))


def test_segmenter_check_catches_a_network_without_dropout() -> None:
    class NoDropout:
        """A segmenter that forgot its dropout."""

        name = "no-dropout"
        size_multiple = 1

        def build(self, in_channels, num_classes, dropout, width=1.0):  # type: ignore[no-untyped-def]
            import torch

            return torch.nn.Conv2d(in_channels, num_classes, 3, padding=1)

        def recipe(self, profile):  # type: ignore[no-untyped-def]
            return registry().create("segmenter", "drn").recipe(profile)

    with pytest.raises(AssertionError, match="two MC-dropout passes are identical"):
        check_segmenter(NoDropout())


def test_uncertainty_check_catches_an_order_dependent_map() -> None:
    class FirstSample:
        """Uses the first sample only."""

        name = "first"
        samples = 3

        def __call__(self, probs):  # type: ignore[no-untyped-def]
            return 1 - probs[0].max(1).values

    with pytest.raises(AssertionError, match="depends on the order"):
        check_uncertainty_map(FirstSample())


def test_uncertainty_check_catches_a_map_reading_moments_it_did_not_declare() -> None:
    class StdMap:
        """Reads the variance but declares that it needs nothing beyond the mean."""

        name = "std"
        samples = 3
        needs: frozenset[str] = frozenset()

        def __call__(self, probs):  # type: ignore[no-untyped-def]
            return probs.std(0, unbiased=False).mean(1).clamp(0, 1)

        def from_moments(self, m):  # type: ignore[no-untyped-def]
            return m.variance.sqrt().mean(1).clamp(0, 1)

    with pytest.raises(AssertionError, match="from_moments fails with only"):
        check_uncertainty_map(StdMap())
    StdMap.needs = frozenset({"variance"})
    check_uncertainty_map(StdMap())


class TestSResNetWithArguments(DetectorContract):
    """The contract classes check methods created with arguments, each variant into a fresh instance."""

    name = "sresnet:20"
    variants = ("sresnet:25",)


def test_a_map_out_of_range_is_reported_with_its_spread() -> None:
    class Triple:
        """Three times a probability: up to 3."""

        name = "triple"
        samples = 2

        def __call__(self, probs):  # type: ignore[no-untyped-def]  # a deliberately bad plugin, untyped on purpose
            return probs.mean(0).max(1).values * 3

    with pytest.raises(AssertionError, match=r"values outside \[0, 1\] \(min 0\.\d+, max [12]\.\d+, 0 NaN, "
                                             r"0 infinite\)"):
        check_uncertainty_map(Triple())


def test_a_wrong_size_multiple_gets_a_hint() -> None:
    class Halves:
        """Downsamples by 2 and back, so odd sizes come back one larger; claims any size works."""

        name = "halves"
        size_multiple = 1

        def build(self, *, in_channels, num_classes, dropout, width=1.0):  # type: ignore[no-untyped-def]  # as above
            import torch

            return torch.nn.Sequential(torch.nn.Conv2d(in_channels, num_classes, 3, stride=2, padding=1),
                                       torch.nn.Dropout(dropout), torch.nn.Upsample(scale_factor=2))

        def recipe(self, profile):  # type: ignore[no-untyped-def]  # as above
            return registry().create("segmenter", "drn").recipe(profile)

    with pytest.raises(AssertionError, match=r"logits \(2, 4, 2, 2\) for input \(2, 1, 1, 2\) \(is size_multiple = 1 "
                                             r"right\?"):
        check_segmenter(Halves())


def test_sampler_check_catches_a_turns_declaration_that_is_not_a_bool() -> None:
    tta = registry().create("sampler", "tta")
    check_sampler(tta)
    tta.turns = "yes"  # type: ignore[misc]
    with pytest.raises(AssertionError, match="turns must be True or False, not 'yes'"):
        check_sampler(tta)
