"""Shared fixtures. Only uqbench's own distribution loads (UQBENCH_PLUGINS), so plugins installed on the
machine cannot change what the suite sees; the cache lives in a temporary folder."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ["UQBENCH_PLUGINS"] = "uqbench"  # before any registry is built

REPO = Path(__file__).resolve().parents[1]
ACDC = REPO.parent / "shared" / "data" / "acdc" / "training"
EXAMPLE = Path(__file__).parent / "example_plugin"
METHOD = ["--segmenter", "example-net", "--uncertainty", "example-maxvar", "--detector", "example-everywhere",
          "--dataset", "example-folder", "--precision", "fp32"]
"""The example method's run; float32 pinned, so its entries read the same on CPUs with and without native bf16."""


E2E_FIXTURES = {"example_runs"}
"""Fixtures that run the pipeline: a test using one is an end-to-end test."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


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


@pytest.fixture(scope="session")
def held_out_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two phantom patients named as ACDC's test patients (patient101, patient102), which have no fold."""
    from uqbench.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("held-out") / "testing"
    for i, pid in enumerate(write_phantom(root, 2, seed=7)):
        new = f"patient{101 + i}"
        for f in (root / pid).iterdir():
            f.rename(f.with_name(f.name.replace(pid, new)))
        (root / pid).rename(root / new)
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


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/example_plugin laid out as an installer would: module plus *.dist-info with entry_points.txt."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy(EXAMPLE / "uqbench_example.py", site)
    info = site / "uqbench_example-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: uqbench-example\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[uqbench]\nexample = uqbench_example\n")
    return site


def _install_example(site: Path) -> None:
    """Put the laid-out example on sys.path and let its distribution load."""
    from uqbench.registry import reset

    sys.path.insert(0, str(site))
    os.environ["UQBENCH_PLUGINS"] = "uqbench,uqbench-example"
    reset()


def _remove_example(site: Path) -> None:
    sys.path.remove(str(site))
    sys.modules.pop("uqbench_example", None)


@pytest.fixture
def example_plugin(example_site: Path) -> Iterator[None]:
    """The example plugin installed and allowed to load, for one test."""
    _install_example(example_site)
    yield
    _remove_example(example_site)


def _run(*args: str) -> None:
    from typer.testing import CliRunner

    from uqbench.cli import app

    result = CliRunner().invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="session")
def example_runs(example_site: Path, tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Real runs of the example plugin on the 4-patient phantom: all folds with its own recipe ("full"), the same
    with the built-in one-pass map ("maxprob"), with --iterations ("smoke"), on two folds ("two-folds") and with
    --samples 2 instead of the map's 4 ("two-samples")."""
    root = tmp_path_factory.mktemp("runs")
    _install_example(example_site)
    data = ["--data", str(tiny_phantom)]
    _run(*METHOD, *data, "--out", str(root / "full"))
    _run(*METHOD, *data, "--uncertainty", "maxprob", "--out", str(root / "maxprob"))
    _run(*METHOD, *data, "--iterations", "3", "--out", str(root / "smoke"))
    _run(*METHOD, *data, "--folds", "0,1", "--out", str(root / "two-folds"))
    _run(*METHOD, *data, "--samples", "2", "--out", str(root / "two-samples"))
    _remove_example(example_site)
    os.environ["UQBENCH_PLUGINS"] = "uqbench"
    from uqbench.registry import reset

    reset()
    yield root


def to_nnunet(acdc: Path, out: Path) -> Path:
    """``acdc`` (ACDC layout) rewritten in nnU-Net's raw layout as its ACDC conversion names it:
    imagesTr/patientNNN_frameFF_0000.nii.gz, labelsTr/patientNNN_frameFF.nii.gz, dataset.json."""
    from uqbench.data import layout

    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    n = 0
    for pdir in layout.patient_dirs(acdc):
        for frame in layout.read_info(pdir).frames.values():
            image, labels = layout.frame_paths(pdir, frame)
            shutil.copy(image, out / "imagesTr" / image.name.replace(".nii.gz", "_0000.nii.gz"))
            shutil.copy(labels, out / "labelsTr" / labels.name.replace("_gt", ""))
            n += 1
    (out / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "cineMRI"}, "labels": {"background": 0, "RV": 1, "MLV": 2, "LVC": 3},
        "numTraining": n, "file_ending": ".nii.gz"}))
    return out


@pytest.fixture(scope="session")
def nnunet_phantom(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny phantom in nnU-Net's raw layout (read-only: copy before damaging)."""
    return to_nnunet(tiny_phantom, tmp_path_factory.mktemp("nnunet") / "Dataset027_ACDC")
