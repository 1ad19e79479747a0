"""`uqbench cache ls|du|prune` on a store a real run filled."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import pytest

from uqbench import config
from uqbench import run as runs


@pytest.mark.e2e
def test_ls_du_and_prune_show_and_free_the_store_a_run_filled(tiny_phantom: Path, tmp_path: Path, fresh_store: Path,
                                                               monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    cfg = config.resolve(segmenter="drn", uncertainty="bmap", detector=None, loss=None, data=tiny_phantom,
                         dataset="acdc", folds=[0], profile="quick", samples=2, device="cpu", seed=0,
                         out=tmp_path / "run", iterations=2)
    summary = runs.run(cfg)
    stored = {(r.stage, r.key[:12]) for r in summary.stages}
    code, text, _ = cli("cache", "ls")
    assert code == 0 and all(stage in text and key in text for stage, key in stored), text
    code, text, _ = cli("cache", "du")
    assert code == 0 and "stages/train" in text and "stages/predict" in text and "prepared" in text, text
    busy = next(fresh_store.glob("stages/score/*.lock"))  # a process computing that stage holds its lock
    with busy.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        code, text, _ = cli("cache", "prune", "--stage", "score")
    assert code == 0 and "removed 0 stage outputs" in text
    code, text, _ = cli("cache", "prune", "--stage", "predict")
    assert code == 0 and "removed 2 stage outputs" in text
    assert not list(fresh_store.glob("stages/predict/*")) and list(fresh_store.glob("stages/train/*/manifest.json"))
    assert any((tmp_path / "run" / "nifti" / "predictions").iterdir())
    again = runs.run(cfg)  # what was pruned is recomputed, to the same numbers
    assert again.segmentation == summary.segmentation
    assert {r.stage for r in again.stages if not r.from_store} == {"predict"}
    code, text, _ = cli("cache", "prune", "--all")
    assert code == 0 and not list(fresh_store.glob("stages/*/*/manifest.json"))


@pytest.mark.parametrize("command", ["ls", "prune"])
def test_an_unknown_stage_is_refused_naming_the_known_ones(command: str, fresh_store: Path, cli: Any) -> None:
    code, _, err = cli("cache", command, "--stage", "bogus")
    assert code == 2 and "--stage 'bogus': expected one of detect, maps, predict, score, train" in err


def test_a_store_file_pruned_under_a_running_command_is_said_so(fresh_store: Path) -> None:
    """A run reading a stage that `cache prune` removed meanwhile: the message says what happened, not that nothing
    was lost."""
    from uqbench.cli import _os_error

    gone = fresh_store / "stages" / "predict" / "0123abcd" / "patient001_ED.npz"
    message = _os_error(FileNotFoundError(2, "No such file or directory", str(gone)))
    assert message.startswith(f"{gone}: removed from the stage store while this command read it")
    assert "nothing finished is lost" not in message
    elsewhere = _os_error(OSError(28, "No space left on device", "/tmp/x"))
    assert elsewhere == "/tmp/x: No space left on device (nothing finished is lost; run again once this is fixed)"
