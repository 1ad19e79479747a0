"""Real ACDC data (skipped when ../shared/data/acdc/training is absent): reader, check, and a 3-patient run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import to_nnunet

from uqbench import config
from uqbench import run as runs
from uqbench.data import layout
from uqbench.protocol import presets
from uqbench.registry import registry
from uqbench.results.summary import Summary
from uqbench.scoring import folder as evaluate

pytestmark = [pytest.mark.acdc, pytest.mark.e2e]


def test_reader_matches_the_manifest(acdc_root: Path) -> None:
    rows = {(r["patient"], r["phase"]): r for r in csv.DictReader((acdc_root.parent / "MANIFEST.csv").open())}
    for patient in ("patient001", "patient057", "patient100"):
        info = layout.read_info(acdc_root / patient)
        for phase in ("ED", "ES"):
            case = layout.read_case(acdc_root / patient, info, phase)
            r = rows[(patient, phase)]
            assert case.image.shape == (int(r["nz"]), int(r["ny"]), int(r["nx"]))
            assert case.spacing == pytest.approx((float(r["sz"]), float(r["sy"]), float(r["sx"])), rel=1e-5)
            assert case.group == r["group"] and int(r["frame"]) == info.frames[phase]
            counts = np.bincount(case.labels.ravel(), minlength=4)
            assert counts.tolist() == [int(r[k]) for k in ("n_bg", "n_rv", "n_myo", "n_lv")]


def test_all_100_patients_are_clean(acdc_root: Path) -> None:
    found, patients, volumes = layout.problems(acdc_root)
    assert (found, patients, volumes) == ([], 100, 200)


def test_apex_is_the_highest_labelled_slice_base_is_low(acdc_root: Path) -> None:
    """The failure rules' slice order, on all 200 volumes: labelled slices are contiguous and their
    foreground area is centred in the low-z half, so z = 0 is basal and the highest labelled slice apical."""
    for case in layout.iter_cases(acdc_root):
        area = (case.labels > 0).sum((1, 2))
        z = np.flatnonzero(area)
        assert z[-1] - z[0] + 1 == z.size, f"{case.patient} {case.phase}: labelled slices not contiguous"
        centre = (z * area[z]).sum() / area[z].sum()
        assert centre < (z[0] + z[-1]) / 2, f"{case.patient} {case.phase}: foreground centred apically"


@pytest.fixture(scope="module")
def three_patient_run(acdc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Summary]:
    """A tiny run (fold 0, 10 steps) on three real patients: (their data folder, the run folder, its summary)."""
    tmp_path = tmp_path_factory.mktemp("acdc3")
    data = tmp_path / "acdc3"
    for p in ("patient016", "patient001", "patient006"):  # folds 0, 3, 2
        shutil.copytree(acdc_root / p, data / p)
    cfg = config.resolve(segmenter="drn", uncertainty="bmap", detector=None, loss=None, data=data, dataset="acdc",
                         folds=[0], profile="quick", samples=2, device="cpu", seed=0, out=tmp_path / "run",
                         iterations=10)
    return data, tmp_path / "run", runs.run(cfg)


def test_three_real_patients_run_end_to_end(three_patient_run: tuple[Path, Path, Summary]) -> None:
    data, run, summary = three_patient_run
    assert summary.segmentation.volumes == 2 and summary.dataset.fingerprint == registry().create(
        "dataset", "acdc", data).fingerprint()
    rows = list(csv.DictReader((run / "cases.csv").open()))
    assert len(rows) == 6 and all(0 <= float(r["dice"]) <= 1 for r in rows)
    # the written label maps keep the source's voxel size, so volumes measured from them match cases.csv
    for r in rows:
        written = nib.load(str(run / "nifti" / "predictions" / f"{r['patient']}_{r['phase']}.nii.gz"))
        info = layout.read_info(data / r["patient"])
        source = nib.load(str(layout.frame_paths(data / r["patient"], info.frames[r["phase"]])[0]))
        assert written.header.get_zooms() == source.header.get_zooms()
        assert np.array_equal(written.affine, source.affine)
        label = {"RV": 1, "MYO": 2, "LV": 3}[r["class"]]
        ml = (np.asarray(written.dataobj) == label).sum() * np.prod(written.header.get_zooms()) / 1000
        assert ml == pytest.approx(float(r["predicted_ml"]), rel=1e-7, abs=1e-5)  # far below one voxel
    assert any(float(r["predicted_ml"]) > 0 for r in rows)
    assert json.loads((run / "config.json").read_text())["data"] == str(data.resolve())


@pytest.mark.parametrize("layout_name", ["acdc", "nnunet"])
def test_a_real_runs_files_score_as_the_run_scored_them_in_either_layout(
        three_patient_run: tuple[Path, Path, Summary], layout_name: str, tmp_path: Path) -> None:
    data, run, summary = three_patient_run
    root = data if layout_name == "acdc" else to_nnunet(data, tmp_path / "Dataset027_ACDC")
    nifti = run / "nifti"
    again = evaluate.evaluate(evaluate.Request(
        name="drn", predictions=nifti / "predictions", data=root, dataset=layout_name, folds=(0,),
        probabilities=nifti / "probabilities", uncertainty_maps=nifti / "uncertainty-maps", uncertainty=None,
        detector=None, protocol=presets.preset("uqbench"), profile=config.Profile.QUICK, device="cpu", seed=0,
        out=tmp_path / "eval"))
    assert again.segmentation == summary.segmentation and again.calibration == summary.calibration
    assert again.risk_coverage == summary.risk_coverage and again.clinical == summary.clinical
    assert (tmp_path / "eval" / "cases.csv").read_text() == (run / "cases.csv").read_text()
