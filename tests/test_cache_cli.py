"""`uqbench cache ls|du|prune` on a store a real run filled."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import pytest

from uqbench import config
from uqbench import run as runs


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
