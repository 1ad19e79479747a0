"""The committed split follows the authors' assignment rule, checked against the issue's wording."""

from __future__ import annotations

from collections import Counter

import pytest

from uqbench.data.folds import acdc_folds, acdc_groups, parse_folds


def test_every_fold_holds_25_patients_5_per_group() -> None:
    folds, groups = acdc_folds(), acdc_groups()
    assert len(folds) == 100
    counts = Counter((folds[p], groups[p]) for p in folds)
    assert set(counts.values()) == {5} and len(counts) == 20


@pytest.mark.parametrize(("patient", "fold", "group"), [
    ("patient001", 3, "DCM"), ("patient005", 3, "DCM"), ("patient006", 2, "DCM"), ("patient015", 1, "DCM"),
    ("patient016", 0, "DCM"), ("patient020", 0, "DCM"), ("patient021", 3, "HCM"), ("patient045", 3, "MINF"),
    ("patient060", 0, "MINF"), ("patient061", 3, "NOR"), ("patient081", 3, "RV"), ("patient100", 0, "RV"),
])
def test_positions_in_each_block_map_to_the_stated_fold(patient: str, fold: int, group: str) -> None:
    assert acdc_folds()[patient] == fold
    assert acdc_groups()[patient] == group


def test_parse_folds_sorts_and_rejects_out_of_range_and_repeats() -> None:
    assert parse_folds("3, 0") == [0, 3]
    with pytest.raises(ValueError, match="'4'"):
        parse_folds("0,4")
    with pytest.raises(ValueError, match="fold '0' is given twice"):
        parse_folds("3,0,0")
