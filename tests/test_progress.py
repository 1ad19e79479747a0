"""A user who waits sees progress: evaluate's cases and detector fits, a run's folds and stages, each a bar that
reaches its total; the last line says the figure a board ranks by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

from uqbench import config
from uqbench import run as runs
from uqbench.protocol import presets
from uqbench.scoring import folder as evaluate

pytestmark = pytest.mark.e2e


class Recorder:
    """The part of rich's Progress the harness drives, remembering each task's total and how far it got."""

    def __init__(self) -> None:
        self.tasks: dict[str, list[float]] = {}  # description -> [total, done]

    def add_task(self, description: str, *, total: float | None = None) -> str:
        self.tasks[description] = [total or 0.0, 0.0]
        return description

    def advance(self, task_id: Any, advance: float = 1) -> None:
        self.tasks[task_id][1] += advance


@pytest.fixture(scope="module")
def progressed(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorder]:
    out = tmp_path_factory.mktemp("progress") / "run"
    seen = Recorder()
    runs.run(config.resolve(segmenter="drn", uncertainty="bmap", detector="threshold", loss=None, data=tiny_phantom,
                            dataset="acdc", folds=[0, 1], profile="quick", samples=2, device="cpu", seed=0, out=out,
                            iterations=3), seen)
    return out, seen


def test_a_run_shows_its_folds_and_every_stage_it_computes_to_the_end(progressed: tuple[Path, Recorder]) -> None:
    _, seen = progressed
    assert seen.tasks["folds scored"] == [2, 2]
    for name in ("fold 0 train", "fold 1 train", "fold 0 test infer", "fold 0 detect", "fold 1 detect"):
        assert name in seen.tasks and seen.tasks[name][0] == seen.tasks[name][1], (name, seen.tasks)


def test_evaluate_shows_its_cases_and_each_folds_detector(progressed: tuple[Path, Recorder], tiny_phantom: Path,
                                                          tmp_path: Path) -> None:
    run, _ = progressed
    seen = Recorder()
    nifti = run / "nifti"
    evaluate.evaluate(evaluate.Request(
        name="drn-run", predictions=nifti / "predictions", data=tiny_phantom, dataset="acdc", folds=(0, 1),
        probabilities=None, uncertainty_maps=nifti / "uncertainty-maps", uncertainty=None, detector="threshold",
        protocol=presets.preset("uqbench"), profile=config.Profile.QUICK, device="cpu", seed=0, out=tmp_path / "e"),
        seen)
    assert seen.tasks["cases scored"] == [4, 4]
    for k in (0, 1):
        total, done = seen.tasks[f"fold {k} detect"]
        assert total == done == 1 + 2  # the fit, then the fold's two volumes


def test_the_last_line_is_the_dice_a_board_ranks_by(tiny_phantom: Path, tmp_path: Path, cli: Cli,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli("run", "--data", str(tiny_phantom), "--folds", "0,1", "--samples", "2", "--iterations", "3",
                         "--detector", "threshold", "--out", str(tmp_path / "run"))
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("mean foreground Dice 0.") and f"(4 volumes); AUCC@{presets.UQBENCH.budget} 0." in last
    assert "what a board ranks detection by; corrected at the operating point 0." in last
