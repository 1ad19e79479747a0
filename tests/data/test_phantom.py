"""The phantom: ACDC layout, stratified ids, and the group anatomy it promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uqbench.data import layout
from uqbench.data.folds import acdc_folds, acdc_groups
from uqbench.data.phantom import _Patient, phantom_ids


def test_ids_spread_over_groups_and_folds() -> None:
    ids = phantom_ids(20)
    folds, groups = acdc_folds(), acdc_groups()
    assert {(folds[p], groups[p]) for p in ids} == {(f, g) for f in range(4) for g in set(groups.values())}
    assert {folds[p] for p in phantom_ids(4)} == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="between 1 and 100"):
        phantom_ids(0)


def test_phantom_is_valid_acdc_layout_with_6_to_12_slices(tiny_phantom: Path) -> None:
    assert layout.problems(tiny_phantom)[0] == []
    for case in layout.iter_cases(tiny_phantom):
        assert 6 <= case.image.shape[0] <= 12
        assert {1, 2, 3} <= set(np.unique(case.labels))


def _volumes(group: str, number: int) -> dict[str, float]:
    rng = np.random.default_rng([0, number])
    p = _Patient(f"patient{number:03d}", group, rng)
    out = {}
    for phase in ("ED", "ES"):
        _, lab = p.render(phase)
        vox = p.sx * p.sy * p.sz / 1000
        out |= {f"{phase}_{c}": float((lab == k).sum() * vox) for k, c in ((1, "rv"), (2, "myo"), (3, "lv"))}
    return out


def test_group_anatomy_dcm_dilated_hcm_thick_rv_enlarged() -> None:
    dcm, hcm, nor, rv = _volumes("DCM", 1), _volumes("HCM", 21), _volumes("NOR", 61), _volumes("RV", 81)
    assert dcm["ED_lv"] > 1.3 * nor["ED_lv"] > 1.3 * hcm["ED_lv"]
    assert hcm["ED_myo"] / hcm["ED_lv"] > 2 * nor["ED_myo"] / nor["ED_lv"]
    assert rv["ED_rv"] > 1.5 * nor["ED_rv"]
    for v in (dcm, hcm, nor, rv):
        assert v["ES_lv"] < v["ED_lv"]
    ef = lambda v: 1 - v["ES_lv"] / v["ED_lv"]
    assert ef(dcm) < 0.4 < ef(nor)
