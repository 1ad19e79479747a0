"""Shared fixtures. Only uqbench's own distribution loads (UQBENCH_PLUGINS), so plugins installed on the
machine cannot change what the suite sees; the cache lives in a temporary folder."""

from __future__ import annotations

import os
import shutil
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
