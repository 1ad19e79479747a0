"""Reliability bins, ECE, Brier and risk-coverage on tiny cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from uqbench.protocol.calibration import aurc, reliability, reliability_counts, risk_coverage


def _two_class() -> tuple[np.ndarray, np.ndarray]:
    p1 = np.array([0.05, 0.15, 0.95, 1.0])
    return np.stack([1 - p1, p1]), np.array([0, 1, 1, 1])


def test_reliability_bins_by_hand() -> None:
    probs, ref = _two_class()
    counts, brier, n = reliability_counts(probs, ref)
    cls1 = reliability(counts[1])
    assert cls1.voxels == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert cls1.confidence[0] == pytest.approx(0.05) and cls1.frequency[0] == 0.0
    assert cls1.confidence[9] == pytest.approx(0.975) and cls1.frequency[9] == 1.0
    assert cls1.confidence[4] is None
    assert cls1.ece == pytest.approx((0.05 + 0.85 + 0.05) / 4)
    assert brier / n == pytest.approx((0.005 + 1.445 + 0.005 + 0.0) / 4)
    pooled = reliability(counts.sum(0))
    assert sum(pooled.voxels) == 8


def test_probability_one_falls_in_the_last_bin() -> None:
    counts, _, _ = reliability_counts(np.array([[0.0], [1.0]]), np.array([1]))
    assert counts[1, 9, 2] == 1 and counts[0, 0, 2] == 1


@pytest.mark.parametrize("bad, message", [(np.nan, "NaN"), (1.5, "outside"), (0.7, "sum to 1")])
def test_bad_probabilities_are_value_errors_naming_the_case(bad: float, message: str) -> None:
    probs, ref = _two_class()
    probs[1, 2] = bad
    with pytest.raises(ValueError, match=f"patient007 ED: .*{message}"):
        reliability_counts(probs, ref, "patient007 ED")


def _line(u: list[float], err_at: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    unc = np.array(u).reshape(1, 1, -1)
    ref = np.ones_like(unc, dtype=np.uint8)
    pred = ref.copy()
    pred[0, 0, err_at] = 2
    return unc, pred, ref


def test_risk_coverage_of_a_perfect_ranking() -> None:
    unc, pred, ref = _line([0.1, 0.2, 0.3, 0.4], err_at=3)
    risk, best = risk_coverage(unc, pred, ref)
    assert risk[75] == 0.0 and risk[100] == pytest.approx(0.25) and risk[90] == pytest.approx(0.25 * 15 / 25)
    out = aurc([risk], [best])
    assert out.aurc == pytest.approx(0.5 * 0.25 * 0.25)
    assert out.e_aurc == pytest.approx(0.0)


def test_risk_coverage_of_the_worst_ranking() -> None:
    unc, pred, ref = _line([0.1, 0.2, 0.3, 0.4], err_at=0)
    risk, best = risk_coverage(unc, pred, ref)
    assert risk[0] == 1.0 and risk[25] == 1.0 and risk[50] == 0.5
    area = 0.25 + (1.5 / 2 + (0.5 + 1 / 3) / 2 + (1 / 3 + 0.25) / 2) * 0.25
    out = aurc([risk], [best])
    assert out.aurc == pytest.approx(area) and out.e_aurc == pytest.approx(area - 0.03125)


def test_risk_coverage_crops_to_the_reference_box() -> None:
    unc, pred, ref = _line([0.1, 0.2, 0.3, 0.4], err_at=3)
    big_u, big_p, big_r = (np.pad(a, ((0, 0), (0, 0), (0, 6))) for a in (unc, pred, ref))
    assert np.array_equal(risk_coverage(big_u, big_p, big_r)[0], risk_coverage(unc, pred, ref)[0])


def test_bad_uncertainty_maps_are_value_errors() -> None:
    unc, pred, ref = _line([0.1, np.nan, 0.3, 0.4], err_at=3)
    with pytest.raises(ValueError, match="case 3: uncertainty map holds NaN"):
        risk_coverage(unc, pred, ref, where="case 3")
    with pytest.raises(ValueError, match="empty"):
        aurc([], [])


def test_error_count_risk_counts_the_wrong_voxels_kept() -> None:
    unc, pred, ref = _line([0.1, 0.2, 0.3, 0.4], err_at=3)  # the error is the most uncertain voxel
    risk, best = risk_coverage(unc, pred, ref, measure="error-count")
    assert risk[75] == 0.0 and risk[100] == 1.0 and risk[90] == pytest.approx(15 / 25)
    out = aurc([risk], [best], "error-count")
    assert out.measure == "error-count" and out.aurc == pytest.approx(0.5 * 0.25) and out.e_aurc == pytest.approx(0)
    unc, pred, ref = _line([0.1, 0.2, 0.3, 0.4], err_at=0)  # the least uncertain: kept from the start
    risk, best = risk_coverage(unc, pred, ref, measure="error-count")
    assert (risk == 1.0).all()
    assert aurc([risk], [best], "error-count").e_aurc == pytest.approx(1 - 0.125)
