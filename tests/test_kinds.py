"""One table of kinds: the registry, the CLI words and the members a class must define all come from it."""

from __future__ import annotations

import pytest

from uqbench import hookspecs
from uqbench.errors import UsageError
from uqbench.kinds import KINDS, SEGMENTER, UNCERTAINTY, kind
from uqbench.registry import registry
from uqbench.testing import check_uncertainty_map


def test_required_members_are_read_from_each_contract() -> None:
    # What the README's "Write a plugin" section promises for each kind, written out by hand.
    expected = {"segmenter": ("size_multiple", "build", "recipe"), "loss": ("__call__",),
                "sampler": ("members", "count", "draw"),
                "uncertainty": ("samples", "__call__"), "detector": ("fit", "predict", "save", "load"),
                "dataset": ("problems", "cases", "folds", "fingerprint")}
    assert {k.name: k.required for k in KINDS} == expected


def test_every_kind_has_its_hook_in_the_hookspecs() -> None:
    for k in KINDS:
        assert callable(getattr(hookspecs, k.hook)), k.hook


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown plugin kind 'segmenters': expected one of segmenter, loss"):
        kind("segmenters")


def test_create_with_a_kind_or_its_name_gives_the_same_method() -> None:
    by_kind = registry().create(UNCERTAINTY, "bmap")
    by_name = registry().create("uncertainty", "bmap")
    assert type(by_kind) is type(by_name) and by_kind.samples == 10
    check_uncertainty_map(by_kind)


def test_messages_use_the_kind_label() -> None:
    with pytest.raises(UsageError, match="unknown uncertainty map 'bmapp'"):
        registry().entry(UNCERTAINTY, "bmapp")
    with pytest.raises(UsageError, match="segmenter 'smp:nope': bad arguments"):
        registry().create(SEGMENTER, "smp:nope")
