"""Protocol presets: named, hashed, overridable, and refused when edited by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from uqbench.protocol import failures
from uqbench.protocol.presets import PRESET_VERSION, PRESETS, SEED_CODE, UQBENCH, Preset, preset


def test_every_preset_has_its_own_hash_and_the_names_do_not_enter_it() -> None:
    assert len({p.digest() for p in PRESETS.values()}) == 3
    assert replace(UQBENCH, name="mine", overrides=("x=y",)).digest() == UQBENCH.digest()


def test_an_override_is_recorded_and_changes_the_hash_unless_it_repeats_the_preset() -> None:
    same = preset("seed-code", correction="failures-only", failure_preset="seed-code", detector_training="in-sample")
    assert same == SEED_CODE and same.label == "seed-code"
    changed = preset("seed-code", correction="patch", failure_preset="paper")
    assert changed.overrides == ("failure-preset=paper", "correction=patch")
    assert changed.label == "seed-code+failure-preset=paper+correction=patch"
    assert changed.failure_rule == failures.PAPER and changed.digest() != SEED_CODE.digest()
    with pytest.raises(ValueError, match="unknown protocol 'sander': expected one of uqbench, sander2020, seed-code"):
        preset("sander")


def test_a_probability_at_the_threshold_is_flagged_only_by_the_authors_comparison() -> None:
    p = np.array([0.49, 0.5, 0.51])
    assert SEED_CODE.flagged(p, 0.5).tolist() == [False, True, True]
    assert UQBENCH.flagged(p, 0.5).tolist() == [False, False, True]


def test_curve_thresholds_are_hundredths_or_the_authors_forty() -> None:
    assert UQBENCH.thresholds()[50] == 0.5 and len(UQBENCH.thresholds()) == 101
    t = SEED_CODE.thresholds()
    assert len(t) == 40 and t[0] == 0 and t[-1] == 1 and t[1] == pytest.approx(1 / 39)


def test_a_preset_reads_back_and_an_edited_or_foreign_record_is_refused() -> None:
    record = preset("uqbench", correction="failures-only").record()
    assert Preset.from_record(record) == preset("uqbench", correction="failures-only")
    with pytest.raises(ValueError, match="protocol 'uqbench\\+correction=failures-only' has hash"):
        Preset.from_record(record | {"risk": "error-count"})
    with pytest.raises(ValueError, match=f"preset version 0; this uqbench has {PRESET_VERSION}"):
        Preset.from_record(record | {"preset_version": 0})
