"""Clinical indices and their agreement statistics against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from uqbench.protocol.clinical import agreement, indices, volume_ml


def test_volume_uses_the_voxel_spacing() -> None:
    labels = np.zeros((5, 10, 10), np.uint8)
    labels[:, :10, :10] = 3  # 500 voxels of 2 x 1 x 1 mm = 1000 mm^3
    assert volume_ml(int((labels == 3).sum()), (2.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert volume_ml(0, (2.0, 1.0, 1.0)) == 0.0


def test_indices_of_one_patient() -> None:
    got = indices({"LV": 120.0, "RV": 100.0, "MYO": 80.0}, {"LV": 48.0, "RV": 60.0, "MYO": 90.0})
    assert got == pytest.approx({"lv_edv": 120.0, "lv_esv": 48.0, "lv_ef": 60.0, "rv_edv": 100.0,
                                 "rv_esv": 60.0, "rv_ef": 40.0, "lv_mass": 84.0})
    assert indices({"LV": 1.0, "RV": 1.0, "MYO": 80.0}, {"LV": 1.0, "RV": 1.0, "MYO": 1.0},
                   density=1.04)["lv_mass"] == pytest.approx(83.2)  # the authors' density


def test_ejection_fraction_without_diastolic_volume_is_undefined() -> None:
    assert math.isnan(indices({"LV": 0.0, "RV": 1.0, "MYO": 1.0}, {"LV": 0.0, "RV": 1.0, "MYO": 1.0})["lv_ef"])


def test_agreement_by_hand_and_against_scipy() -> None:
    auto, ref = [1.0, 2.0, 3.0, 7.0], [1.0, 2.0, 4.0, 5.0]
    got = agreement(auto, ref)
    d = np.array([0.0, 0.0, -1.0, 2.0])
    assert got.bias == pytest.approx(0.25)
    assert got.sd == pytest.approx(math.sqrt(((d - 0.25) ** 2).sum() / 3))
    assert got.mae == pytest.approx(0.75)
    assert got.r == pytest.approx(stats.pearsonr(auto, ref).statistic)
    assert got.n == 4 and got.undefined == 0


def test_agreement_leaves_out_and_counts_undefined_values() -> None:
    got = agreement([1.0, float("nan"), 3.0], [1.0, 2.0, 4.0])
    assert got.n == 2 and got.undefined == 1 and got.mae == pytest.approx(0.5)
    with pytest.raises(ValueError, match="3 automatic values against 2"):
        agreement([1.0, 2.0, 3.0], [1.0, 2.0])
