"""Shared fixtures. Only uqbench's own distribution loads (UQBENCH_PLUGINS), so plugins installed on the
machine cannot change what the suite sees; the cache lives in a temporary folder."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ["UQBENCH_PLUGINS"] = "uqbench"  # before any registry is built

REPO = Path(__file__).resolve().parents[1]
ACDC = REPO.parent / "shared" / "data" / "acdc" / "training"


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uqbench-cache")
    os.environ["UQBENCH_CACHE"] = str(root)
    return root


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli(*args)`` runs ``uqbench *args`` in process: (exit status, stdout, stderr)."""
    from uqbench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["uqbench", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache and stage store of this test's own, so every stage is computed here (the suite's shared store may
    already hold the stages of a run with the same settings)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("UQBENCH_CACHE", str(root))
    return root


@pytest.fixture(autouse=True)
def _fresh_registry() -> None:
    from uqbench.registry import reset

    os.environ["UQBENCH_PLUGINS"] = "uqbench"
    reset()
    yield
    os.environ["UQBENCH_PLUGINS"] = "uqbench"
    reset()


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four synthetic patients in the ACDC layout, one per fold (read-only: copy before damaging)."""
    from uqbench.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("phantom") / "data"
    write_phantom(root, 4, seed=1)
    return root


@pytest.fixture
def phantom_copy(tiny_phantom: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny phantom that a test may damage."""
    dst = tmp_path / "data"
    shutil.copytree(tiny_phantom, dst)
    return dst


@pytest.fixture(scope="session")
def acdc_root() -> Path:
    """The real ACDC training set; tests using it skip when ../shared/data/acdc/training is absent."""
    if not ACDC.is_dir():
        pytest.skip(f"real ACDC data not found at {ACDC}")
    return ACDC
