"""tests/example_plugin is discovered through genuine metadata, listed, passes the contract kit and runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from uqbench.registry import registry
from uqbench.results.summary import read as read_summary
from uqbench.testing import (
    DatasetContract,
    DetectorContract,
    LossContract,
    SamplerContract,
    SegmenterContract,
    UncertaintyMapContract,
    check_detector,
    check_loss,
    check_sampler,
    check_segmenter,
    check_uncertainty_map,
)

EXAMPLE = Path(__file__).parent / "example_plugin"


def _cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from uqbench.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.mark.usefixtures("example_plugin")
def test_example_plugin_is_listed_with_its_distribution() -> None:
    code, out = _cli("plugins", "--json")
    assert code == 0
    methods = {(m["kind"], m["name"]): m for m in json.loads(out)["methods"]}
    for key in [("segmenter", "example-net"), ("loss", "example-l2"), ("sampler", "example-noise"),
                ("uncertainty", "example-maxvar"),
                ("detector", "example-everywhere"), ("dataset", "example-folder")]:
        assert methods[key]["distribution"] == "uqbench-example" and methods[key]["version"] == "0.1.0"
    assert methods[("segmenter", "drn")]["distribution"] == "uqbench"


@pytest.mark.usefixtures("example_plugin")
def test_example_plugin_passes_the_contract_kit(tmp_path: Path) -> None:
    reg = registry()
    check_segmenter(reg.create("segmenter", "example-net"))
    check_loss(reg.create("loss", "example-l2"))
    check_uncertainty_map(reg.create("uncertainty", "example-maxvar"))
    check_sampler(reg.create("sampler", "example-noise:0.1"))
    check_detector(reg.create("detector", "example-everywhere"), tmp_path)


@pytest.mark.e2e
@pytest.mark.usefixtures("example_plugin")
def test_example_plugin_runs_end_to_end(tiny_phantom: Path, tmp_path: Path) -> None:
    code, out = _cli("run", "--segmenter", "example-net", "--sampler", "example-noise", "--uncertainty",
                     "example-maxvar", "--detector", "example-everywhere", "--data", str(tiny_phantom),
                     "--dataset", "example-folder", "--folds", "0,1", "--iterations", "3",
                     "--out", str(tmp_path / "run"))
    assert code == 0, out
    summary = read_summary(tmp_path / "run" / "summary.json")
    assert summary.provenance.methods["segmenter"].distribution == "uqbench-example"
    assert summary.provenance.methods["loss"].name == "example-l2"
    assert summary.provenance.methods["sampler"].distribution == "uqbench-example"
    assert summary.corrected is not None


@pytest.mark.slow
def test_pip_installed_example_is_discovered_in_a_fresh_process(tmp_path: Path) -> None:
    target = tmp_path / "target"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(EXAMPLE)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    env = dict(os.environ, PYTHONPATH=str(target), UQBENCH_PLUGINS="uqbench,uqbench-example")
    out = subprocess.run([sys.executable, "-m", "uqbench", "plugins", "--json", "--kind", "segmenter"],
                         capture_output=True, text=True, env=env, check=True).stdout
    names = {m["name"]: m["distribution"] for m in json.loads(out)["methods"]}
    assert names == {"dn": "uqbench", "drn": "uqbench", "smp": "uqbench", "unet": "uqbench",
                     "example-net": "uqbench-example"}


# The README's recommended way to test a plugin, applied to the example: the *Contract base classes.
@pytest.mark.usefixtures("example_plugin")
class TestExampleNet(SegmenterContract):
    name = "example-net"


@pytest.mark.usefixtures("example_plugin")
class TestExampleLoss(LossContract):
    name = "example-l2"


@pytest.mark.usefixtures("example_plugin")
class TestExampleSampler(SamplerContract):
    name = "example-noise"
    variants = ("example-noise:0.2",)


@pytest.mark.usefixtures("example_plugin")
class TestExampleMap(UncertaintyMapContract):
    name = "example-maxvar"


@pytest.mark.usefixtures("example_plugin")
class TestExampleDetector(DetectorContract):
    name = "example-everywhere"


@pytest.mark.usefixtures("example_plugin")
class TestExampleDataset(DatasetContract):
    name = "example-folder"

    @pytest.fixture
    def root(self, tiny_phantom: Path) -> Path:
        return tiny_phantom
