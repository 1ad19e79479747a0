"""Dice and the largest-component post-processing, against MedPy and hand-built volumes."""

from __future__ import annotations

import numpy as np
import pytest
from medpy.metric import binary
from scipy import ndimage

from uqbench.protocol.metrics import check_pair, dice, largest_component, score, surface_distances


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
    with pytest.raises(ValueError, match=r"patient001 ED: prediction spacing \(10.0, 1.5, 1.5\) differs"):
        score(a, a, spacing=(10.0, 1.4, 1.4), where="patient001 ED", pred_spacing=(10.0, 1.5, 1.5))
    assert score(a, a, spacing=(10.0, 1.4, 1.4), where="patient001 ED", pred_spacing=(10.0, 1.4, 1.4))[3]["dice"] == 1.0


def test_cropped_largest_component_equals_the_whole_volume_computation() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        lab = np.where(rng.random((6, 30, 34)) < 0.08, rng.integers(1, 4, (6, 30, 34)), 0).astype(np.uint8)
        lab[:, 10:20, 12:22] = 2
        want = np.zeros_like(lab)
        for c in (1, 2, 3):
            comp, _ = ndimage.label(lab == c, ndimage.generate_binary_structure(3, 1))
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            want[comp == sizes.argmax()] = c
        assert np.array_equal(largest_component(lab), want)


def _random_pair(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A blob and a perturbed copy with islands, on an anisotropic grid."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:8, :40, :36]
    ref = ((zz - 3.5) ** 2 / 9 + (yy - 20) ** 2 / 120 + (xx - 18) ** 2 / 90 < 1).astype(np.uint8) * 3
    noise = ndimage.gaussian_filter(rng.standard_normal(ref.shape), 1.5)
    grown = ndimage.binary_dilation(ref > 0, iterations=2) & (noise > 0.1)
    pred = np.where(grown, 3, 0).astype(np.uint8)  # a boundary moved by up to 2 voxels
    pred[rng.random(ref.shape) < 0.002] = 3  # islands
    pred[:, :, :3] = 0
    spacing = (float(rng.uniform(5, 10)), float(rng.uniform(1.2, 1.9)), float(rng.uniform(1.2, 1.9)))
    return pred, ref, spacing


@pytest.mark.parametrize("seed", range(6))
def test_hd_pooled_hd95_and_assd_match_medpy(seed: int) -> None:
    pred, ref, spacing = _random_pair(seed)
    ours = surface_distances(pred, ref, 3, spacing=spacing)
    p, r = pred == 3, ref == 3
    assert ours["hd"] == pytest.approx(binary.hd(p, r, spacing), abs=1e-9)
    assert ours["hd95"] == pytest.approx(binary.hd95(p, r, spacing), abs=1e-9)
    assert ours["assd"] == pytest.approx(binary.assd(p, r, spacing), abs=1e-9)


def test_directed_max_hd95_by_hand_on_two_voxel_lines() -> None:
    a = np.zeros((1, 1, 30), np.uint8)
    b = a.copy()
    a[0, 0, 0:10] = 1  # every voxel of a 1-voxel-thick line is surface
    b[0, 0, 0:20] = 1
    ours = surface_distances(a, b, 1, spacing=(1.0, 1.0, 2.0), hd95="directed-max")
    # a -> b: all 0; b -> a: voxels 10..19 are 1..10 voxels (2..20 mm) away, others 0
    d_ba = np.r_[np.zeros(10), 2.0 * np.arange(1, 11)]
    assert ours["hd95"] == pytest.approx(max(0.0, np.percentile(d_ba, 95)))
    assert ours["hd"] == 20.0 and ours["assd"] == pytest.approx(d_ba.sum() / (10 + 20))


def test_empty_structures_give_zero_or_the_volume_diagonal() -> None:
    a = np.zeros((2, 3, 4), np.uint8)
    b = a.copy()
    b[1, 1, 1] = 2
    assert surface_distances(a, a, 2, spacing=(10.0, 1.5, 1.5)) == {"hd": 0.0, "hd95": 0.0, "assd": 0.0}
    diag = np.sqrt(20 ** 2 + 4.5 ** 2 + 6 ** 2)
    assert surface_distances(a, b, 2, spacing=(10.0, 1.5, 1.5))["hd"] == pytest.approx(diag)
    with pytest.raises(ValueError, match="unknown HD95 definition"):
        surface_distances(b, b, 2, spacing=(1.0, 1.0, 1.0), hd95="median")  # type: ignore[arg-type]
