"""Dice and the largest-component post-processing, against MedPy and hand-built volumes."""

from __future__ import annotations

import numpy as np
import pytest
from medpy.metric import binary
from uqbench.protocol.metrics import check_pair, dice, largest_component


@pytest.mark.parametrize("seed", range(5))
def test_dice_matches_medpy_on_random_volumes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 4, (6, 30, 28)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.3, rng.integers(0, 4, ref.shape), ref).astype(np.uint8)
    for c in (1, 2, 3):
        assert dice(pred, ref, c) == pytest.approx(binary.dc(pred == c, ref == c), abs=1e-12)


def test_dice_empty_policy_both_empty_is_one_one_empty_is_zero() -> None:
    a = np.zeros((2, 4, 4), np.uint8)
    b = a.copy()
    b[0, 1, 1] = 2
    assert dice(a, a, 2) == 1.0
    assert dice(a, b, 2) == 0.0 and dice(b, a, 2) == 0.0


def test_largest_component_keeps_biggest_6_connected_blob_per_class() -> None:
    lab = np.zeros((3, 6, 6), np.uint8)
    lab[1, 0:2, 0:2] = 3  # 4 voxels
    lab[0, 4, 4] = 3  # 1 voxel, separate
    lab[2, 1, 1] = 3  # touches (1,1,1) through a face: part of the big blob
    lab[1, 4, 0] = 1
    lab[2, 5, 1] = 1  # only diagonal to (1,4,0): a separate 6-connected component, same size
    out = largest_component(lab)
    assert (out == 3).sum() == 5 and out[0, 4, 4] == 0
    assert (out == 1).sum() == 1  # a tie keeps one of the two
    assert set(np.unique(out)) <= {0, 1, 3}


def test_check_pair_names_the_case_on_shape_or_label_errors() -> None:
    a = np.zeros((2, 3, 3), np.uint8)
    with pytest.raises(ValueError, match="patient001 ED: prediction shape"):
        check_pair(a, np.zeros((2, 3, 4), np.uint8), "patient001 ED")
    with pytest.raises(ValueError, match=r"label values outside 0\.\.3"):
        check_pair(a + 7, a, "patient001 ED")
