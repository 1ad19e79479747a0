"""--test-data: after the cross-validation, a model of every training patient predicts a disjoint test set,
scored apart with a detector fitted on every cross-validation prediction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import Cli

from uqbench import config
from uqbench import run as runs
from uqbench.protocol import presets
from uqbench.results import summary as summaries
from uqbench.results.summary import Summary
from uqbench.run.seeds import HELD_OUT
from uqbench.scoring import folder as evaluate

pytestmark = pytest.mark.e2e  # every test here runs the pipeline


def _cfg(data: Path, out: Path, test_data: Path | None) -> config.RunConfig:
    return config.resolve(segmenter="drn", uncertainty="emap", detector="threshold", loss=None, data=data,
                          dataset="acdc", folds=[0, 1], profile="quick", samples=None, device="cpu", seed=0, out=out,
                          iterations=4, test_data=test_data)


@pytest.fixture(scope="module")
def held_out_run(tiny_phantom: Path, held_out_phantom: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Path, Summary]:
    """A run of folds 0 and 1 with --test-data: its folder and summary."""
    out = tmp_path_factory.mktemp("held-out-run") / "run"
    return out, runs.run(_cfg(tiny_phantom, out, held_out_phantom))


def test_test_data_is_predicted_by_a_model_of_every_training_patient_and_scored_apart(
        tiny_phantom: Path, held_out_phantom: Path, held_out_run: tuple[Path, Summary], tmp_path: Path) -> None:
    plain = runs.run(_cfg(tiny_phantom, tmp_path / "cv", None))
    run, summary = held_out_run
    assert summary.segmentation == plain.segmentation and summary.corrected == plain.corrected  # CV untouched
    test = summary.test
    assert test is not None and test.segmentation.volumes == 4 and test.corrected is not None
    assert json.dumps(summaries.read(run / "summary.json").record()) == json.dumps(summary.record())
    assert test.detection is not None and test.calibration is not None and test.dataset.root == str(held_out_phantom)
    cases = pd.read_csv(run / "test" / "cases.csv")
    assert set(cases["patient"]) == {"patient101", "patient102"} and set(cases["fold"]) == {HELD_OUT}
    assert set(pd.read_csv(run / "cases.csv")["patient"]).isdisjoint(cases["patient"])
    stages = json.loads((run / "stages.json").read_text())["stages"]
    (trained,) = [s for s in stages if s["stage"] == "train" and s["fold"] == HELD_OUT]
    assert len(trained["hashed"]["inputs"]["cases"]) == 8  # all four training patients, both phases
    assert trained["hashed"]["settings"]["unit_stride"] == 2  # drn's two few-channel strided shortcuts (devices)
    (fitted,) = [s for s in stages if s["stage"] == "detect" and s["fold"] == HELD_OUT]
    assert len(fitted["hashed"]["inputs"]["fit"]) == 2  # the predictions of both cross-validation folds
    # the test set's files score as the run scored them
    nifti = run / "test" / "nifti"
    again = evaluate.evaluate(evaluate.Request(
        name="drn", predictions=nifti / "predictions", data=held_out_phantom, dataset="acdc", folds=None,
        probabilities=nifti / "probabilities", uncertainty_maps=nifti / "uncertainty-maps", uncertainty=None,
        detector=None, protocol=presets.preset("uqbench"), profile=config.Profile.QUICK, device="cpu", seed=0,
        out=tmp_path / "eval"))
    assert again.segmentation == test.segmentation and again.calibration == test.calibration
    assert again.risk_coverage == test.risk_coverage and again.clinical == test.clinical


def test_training_and_test_files_in_one_folder_score_as_the_run_kept_them_apart(
        tiny_phantom: Path, held_out_phantom: Path, held_out_run: tuple[Path, Summary], tmp_path: Path,
        cli: Cli) -> None:
    # an nnU-Net user's layout: cross-validation and test predictions side by side, the patients in one folder
    run, summary = held_out_run
    data, files = tmp_path / "data", tmp_path / "files"
    for root in (tiny_phantom, held_out_phantom):
        shutil.copytree(root, data, dirs_exist_ok=True)
    for part in ("predictions", "probabilities", "uncertainty-maps"):
        for nifti in (run / "nifti", run / "test" / "nifti"):
            shutil.copytree(nifti / part, files / part, dirs_exist_ok=True)
    code, stdout, err = cli("evaluate", "--name", "drn", "--data", str(data), "--folds", "0,1", "--predictions",
                            str(files / "predictions"), "--probabilities", str(files / "probabilities"),
                            "--uncertainty-maps", str(files / "uncertainty-maps"), "--detector", "threshold",
                            "--profile", "quick", "--device", "cpu", "--out", str(tmp_path / "eval"))
    assert code == 0, err
    assert f"held-out test set ({data.resolve()}, 4 volumes)" in " ".join(stdout.split())
    again = summaries.read(tmp_path / "eval" / "summary.json")
    assert summary.test is not None and again.test is not None
    ours, theirs = again.record(), summary.record()  # as JSON text, where NaN equals NaN
    for field in ("segmentation", "corrected", "detection", "calibration", "risk_coverage", "clinical",
                  "correction_effort"):
        assert json.dumps(ours[field]) == json.dumps(theirs[field]), field
        assert json.dumps(ours["test"][field]) == json.dumps(theirs["test"][field]), f"test {field}"
    for table in ("cases.csv", "detection.csv", "test/cases.csv", "test/detection.csv"):
        assert (tmp_path / "eval" / table).read_text() == (run / table).read_text(), table


def test_a_test_patient_that_is_also_a_training_patient_is_refused(tiny_phantom: Path, tmp_path: Path,
                                                                   cli: Cli) -> None:
    overlap = tmp_path / "testing"
    shutil.copytree(tiny_phantom / "patient001", overlap / "patient001")
    code, _, err = cli("run", "--data", str(tiny_phantom), "--test-data", str(overlap), "--iterations", "1",
                       "--out", str(tmp_path / "out"))
    line = " ".join(err.split())
    assert code == 2 and "Traceback" not in err, err
    assert f"--test-data {overlap}: patient001 is also a training patient" in line and "disjoint" in line
    assert not (tmp_path / "out").exists()
