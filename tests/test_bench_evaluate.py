"""`uqbench bench evaluate`: uqbench evaluate beside nnU-Net's own evaluator on files nnU-Net wrote; Dice agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import Cli

from uqbench.data.folds import acdc_folds

pytestmark = pytest.mark.e2e


def test_bench_evaluate_times_both_and_every_dice_equals_nnunets(tiny_phantom: Path, cli: Cli,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nnunetv2")
    monkeypatch.setenv("COLUMNS", "200")
    fold = acdc_folds()["patient001"]
    code, out, err = cli("bench", "evaluate", "--data", str(tiny_phantom), "--fold", str(fold))
    assert code == 0, err
    row = next(line for line in out.splitlines() if re.search(r"\d+\.\d+x", line))
    compared, difference = row.split("│")[-3:-1]
    assert int(compared) == 2 * 3  # patient001's two phases, three structures
    assert float(difference) <= 1e-6


def test_bench_evaluate_refuses_a_fold_outside_the_split(tiny_phantom: Path, cli: Cli) -> None:
    code, _, err = cli("bench", "evaluate", "--data", str(tiny_phantom), "--fold", "7")
    assert code == 2 and "--fold 7: expected 0, 1, 2 or 3" in err
