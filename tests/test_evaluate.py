"""`uqbench evaluate`: a run's own files give the run's numbers; files made elsewhere are checked, one line each."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import Cli

from uqbench import config
from uqbench import run as runs
from uqbench.errors import UsageError
from uqbench.protocol import presets
from uqbench.scoring import folder as evaluate

pytestmark = pytest.mark.e2e  # every test here runs the pipeline


@pytest.fixture(scope="module")
def finished(tiny_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of every fold of the tiny phantom with an MC map and the threshold detector."""
    out = tmp_path_factory.mktemp("evaluate") / "run"
    runs.run(config.resolve(segmenter="drn", uncertainty="bmap", detector="threshold", loss=None,
                                data=tiny_phantom, dataset="acdc", folds=[0, 1, 2, 3], profile="quick", samples=3,
                                device="cpu", seed=0, out=out, iterations=4))
    return out


def _request(run: Path, data: Path, out: Path, **kw: Any) -> evaluate.Request:
    nifti = run / "nifti"
    args: dict[str, Any] = dict(name="drn-run", predictions=nifti / "predictions", data=data, dataset="acdc",
                                folds=None,
                                probabilities=nifti / "probabilities", uncertainty_maps=nifti / "uncertainty-maps",
                                uncertainty=None, detector="threshold", protocol=presets.preset("uqbench"),
                                profile=config.Profile.QUICK, device="cpu", seed=0, out=out)
    args.update(kw)
    return evaluate.Request(**args)


def _results(folder: Path) -> str:
    """summary.json without what says when, where and how it was made, as text (so that NaN equals NaN)."""
    s = json.loads((folder / "summary.json").read_text())
    return json.dumps({k: v for k, v in s.items() if k not in ("timings_s", "notes", "stages", "provenance",
                                                                "dataset")}, indent=1)


def test_a_runs_own_files_score_as_the_run_scored_them(finished: Path, tiny_phantom: Path, tmp_path: Path) -> None:
    evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "eval"))
    assert _results(tmp_path / "eval") == _results(finished)
    for table in ("cases.csv", "detection.csv", "slices.csv", "positions.csv"):
        ours, theirs = pd.read_csv(tmp_path / "eval" / table), pd.read_csv(finished / table)
        if "patient" in ours:  # a run lists its cases fold by fold
            ours, theirs = (t.sort_values(["patient", "phase"], kind="stable").reset_index(drop=True)
                            for t in (ours, theirs))
        pd.testing.assert_frame_equal(ours, theirs)


def test_the_oracle_flags_exactly_the_failure_patches(finished: Path, tiny_phantom: Path, tmp_path: Path) -> None:
    summary = evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "eval", detector="oracle",
                                         probabilities=None, uncertainty_maps=None))
    det = pd.read_csv(tmp_path / "eval" / "detection.csv")
    assert (det["flagged_patches"] == det["failure_patches"]).all()
    assert (det["true_positive_patches"] == det["failure_patches"]).all()
    assert (det["detected_failure_voxels"] == det["failure_voxels"]).all()
    assert summary.detection is not None and summary.detection.voxel_sensitivity == 1.0
    assert summary.corrected is not None
    assert summary.corrected.mean_foreground_dice >= summary.segmentation.mean_foreground_dice
    assert summary.calibration is None and summary.risk_coverage is None  # no probabilities, no map


def test_a_computed_map_and_the_reader_are_named_in_provenance(finished: Path, tiny_phantom: Path,
                                                                 tmp_path: Path) -> None:
    summary = evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "eval", uncertainty="emap",
                                         uncertainty_maps=None, detector=None))
    assert summary.risk_coverage is not None and summary.calibration is not None
    assert summary.provenance.methods["uncertainty"].spec == "emap"
    assert summary.provenance.methods["dataset"].spec == "acdc"


def test_folds_restrict_the_cases_expected(finished: Path, tiny_phantom: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    shutil.copytree(finished / "nifti" / "predictions", preds)
    for f in preds.iterdir():
        if not f.name.startswith("patient001"):
            f.unlink()
    cases = pd.read_csv(finished / "cases.csv")
    fold = int(cases[cases["patient"] == "patient001"]["fold"].iloc[0])
    summary = evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "eval", predictions=preds,
                                         probabilities=None, uncertainty_maps=None, detector=None, folds=(fold,)))
    assert summary.segmentation.volumes == 2
    assert set(pd.read_csv(tmp_path / "eval" / "cases.csv")["patient"]) == {"patient001"}


def test_folds_leave_the_files_of_other_folds_alone(finished: Path, tiny_phantom: Path, tmp_path: Path) -> None:
    """A run's whole nifti/ folder scored for one fold: the other folds' files are cases of the data, not strangers."""
    cases = pd.read_csv(finished / "cases.csv")
    fold = int(cases[cases["patient"] == "patient001"]["fold"].iloc[0])
    summary = evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "eval", detector=None, folds=(fold,)))
    assert set(pd.read_csv(tmp_path / "eval" / "cases.csv")["fold"]) == {fold}
    assert summary.segmentation.volumes == 2 * cases[cases["fold"] == fold]["patient"].nunique()


def test_evaluate_refuses_an_out_folder_holding_a_run(finished: Path, tiny_phantom: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("nifti"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UsageError, match=f"^--out {run}: holds a run"):
        evaluate.evaluate(_request(finished, tiny_phantom, run))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_evaluate_waits_for_no_one_while_another_command_writes_its_out(finished: Path, tiny_phantom: Path,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)  # what a run or evaluation holds while it writes there
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(UsageError, match=f"--out {out}: another uqbench command is writing there now"):
            evaluate.evaluate(_request(finished, tiny_phantom, out, detector=None))
    finally:
        os.close(fd)
    assert list(out.iterdir()) == []


def test_a_map_of_the_mean_softmax_alone_is_computed_from_saved_probabilities(finished: Path, tiny_phantom: Path,
                                                                               tmp_path: Path) -> None:
    """maxprob declares T = 10 but reads only the mean, so saved probabilities are all it needs; bmap reads the
    spread of the samples, which they do not hold."""
    summary = evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "eval", uncertainty="maxprob",
                                         uncertainty_maps=None, detector=None))
    assert summary.risk_coverage is not None and summary.provenance.methods["uncertainty"].spec == "maxprob"
    with pytest.raises(UsageError, match="--uncertainty bmap: this map reads the spread of 10 MC samples"):
        evaluate.check(_request(finished, tiny_phantom, tmp_path / "e2", uncertainty="bmap", uncertainty_maps=None))


def test_a_preset_that_fits_detectors_in_sample_is_refused_with_a_detector(finished: Path, tiny_phantom: Path,
                                                                            tmp_path: Path) -> None:
    """evaluate fits each fold's detector on the other folds' cases; it must not post that under a preset whose hash
    promises in-sample fitting."""
    with pytest.raises(UsageError, match="--detector threshold: protocol sander2020 fits detectors on each fold's own"):
        evaluate.check(_request(finished, tiny_phantom, tmp_path / "eval", protocol=presets.preset("sander2020")))
    evaluate.check(_request(finished, tiny_phantom, tmp_path / "eval",
                            protocol=presets.preset("sander2020", detector_training="out-of-fold")))


def _copy(run: Path, tmp: Path) -> Path:
    """A private copy of a run's NIfTI folders that a test may damage."""
    shutil.copytree(run / "nifti", tmp / "nifti")
    return tmp / "nifti"


def _one(folder: Path) -> Path:
    return sorted(folder.glob("*.nii.gz"))[0]


def _rewrite(path: Path, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
    img = nib.load(str(path))
    data, affine = change(np.asarray(img.dataobj), img.affine.copy())
    header = img.header.copy()
    if data.dtype.kind == "f":  # stored as floats, unscaled, so that a NaN or a 2.0 reaches the file as it is
        header.set_data_dtype(np.float32)
        header.set_slope_inter(1.0, 0.0)
    nib.save(nib.Nifti1Image(data, affine, header=header), str(path))


def _shift(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    affine[0, 3] += 2.0
    return data, affine


def _probabilities_halved(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (data.astype(np.float32) * 0.5), affine


def _probabilities_nan(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    data = data.astype(np.float32)
    data[0, 0, 0, 0] = np.nan
    return data, affine


BAD: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    # fault: (the folder damaged, damage -> the file named, message)
    "another shape": ("predictions", lambda f: _damaged(_one(f), lambda d, a: (d[1:], a)), "differs from the image's"),
    "another affine": ("predictions", lambda f: _damaged(_one(f), _shift), "affine (orientation or origin)"),
    "labels outside 0..3": ("predictions", lambda f: _damaged(_one(f), lambda d, a: (d * 0 + 5, a)),
                            "label values 5 outside 0..3"),
    "probabilities not summing to 1": ("probabilities", lambda f: _damaged(_one(f), _probabilities_halved),
                                       "sum to between"),
    "probabilities holding NaN": ("probabilities", lambda f: _damaged(_one(f), _probabilities_nan),
                                  "NaN or infinite probabilities"),
    "a map outside [0, 1]": ("uncertainty-maps", lambda f: _damaged(_one(f), lambda d, a: (d * 0 + 2.0, a)),
                             "outside [0, 1]"),
    "a missing case": ("predictions", lambda f: _removed(_one(f)), "1 case(s) missing"),
    "an extra case": ("predictions", lambda f: _extra(_one(f)), "1 file(s) of no case in the data: patient150_ED"),
    "an unreadable NIfTI": ("predictions", lambda f: _garbled(_one(f)), "unreadable NIfTI"),
}


def _damaged(path: Path, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> Path:
    _rewrite(path, change)
    return path


def _removed(path: Path) -> Path:
    path.unlink()
    return path.parent


def _extra(path: Path) -> Path:
    shutil.copy(path, path.with_name("patient150_ED.nii.gz"))
    return path.parent


def _garbled(path: Path) -> Path:
    path.write_bytes(gzip.compress(b"not a nifti"))
    return path


@pytest.mark.parametrize("fault", list(BAD))
def test_bad_input_is_one_line_naming_the_file(fault: str, finished: Path, tiny_phantom: Path, tmp_path: Path,
                                               cli: Cli) -> None:
    folder, damage, message = BAD[fault]
    nifti = _copy(finished, tmp_path)
    named = damage(nifti / folder)
    code, _, err = cli("evaluate", "--predictions", str(nifti / "predictions"), "--data", str(tiny_phantom),
                       "--probabilities", str(nifti / "probabilities"), "--uncertainty-maps",
                       str(nifti / "uncertainty-maps"), "--out", str(tmp_path / "eval"))
    line = " ".join(err.split())  # rich wraps long lines on the console
    assert code == 2 and "Traceback" not in err and str(named) in line and message in line, err
    assert not (tmp_path / "eval").exists()  # nothing written before the input is checked


def test_nnunet_names_and_npz_probabilities_score_as_the_runs_files(finished: Path, tiny_phantom: Path,
                                                                     tmp_path: Path) -> None:
    """nnU-Net's ACDC case names (patientNNN_frameFF) and --save_probabilities files (<case>.npz, key
    'probabilities', classes first, z y x) give what the run's own files give."""
    from uqbench.data import layout

    src = finished / "nifti"
    preds, probs = tmp_path / "nnunet" / "predictions", tmp_path / "nnunet" / "probabilities"
    preds.mkdir(parents=True)
    probs.mkdir()
    for f in sorted((src / "predictions").glob("*.nii.gz")):
        patient, phase = f.name[: -len(".nii.gz")].split("_")
        frame = layout.read_info(tiny_phantom / patient).frames[phase]
        case = f"{patient}_frame{frame:02d}"
        shutil.copy(f, preds / f"{case}.nii.gz")
        p = np.asarray(nib.load(src / "probabilities" / f.name).dataobj, np.float32).transpose(3, 2, 1, 0)
        np.savez_compressed(probs / f"{case}.npz", probabilities=p)
    evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "theirs", predictions=preds, probabilities=probs,
                               uncertainty_maps=None, uncertainty="emap", detector="oracle"))
    evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "ours", uncertainty_maps=None, uncertainty="emap",
                               detector="oracle"))
    assert _results(tmp_path / "theirs") == _results(tmp_path / "ours")


def test_an_evaluation_is_submitted_as_external_predictions(finished: Path, tiny_phantom: Path, tmp_path: Path,
                                                            cli: Cli) -> None:
    evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "eval"))
    lb = tmp_path / "lb"
    code, _, err = cli("submit", str(tmp_path / "eval"), "--leaderboards", str(lb))
    assert code == 0, err
    (path,) = (lb / "entries").glob("*.json")
    record = json.loads(path.read_text())
    assert record["external"] is True and record["method"]["segmenter"] == {
        "spec": "drn-run", "distribution": "external", "version": "-"}
    assert record["method"]["uncertainty"]["spec"] == "external" and record["method"]["detector"]["spec"] == "threshold"
    run_summary = json.loads((finished / "summary.json").read_text())
    assert record["results"]["mean_foreground_dice"] == run_summary["segmentation"]["mean_foreground_dice"]
    assert cli("leaderboard", "--leaderboards", str(lb))[0] == 0
    (board,) = lb.glob("*.md")
    assert "external predictions" in board.read_text()
    assert cli("leaderboard", "--check", "--leaderboards", str(lb))[0] == 0
    code, _, err = cli("report", str(tmp_path / "eval"), "--out", str(tmp_path / "report"))
    assert code == 0, err
    report = (tmp_path / "report" / "report.md").read_text()
    assert "drn-run · external map · threshold" in report and "scored by uqbench evaluate" in report
    assert not list((tmp_path / "report").glob("*example*"))  # no stage store behind an evaluation


@pytest.mark.parametrize(("change", "says"), [
    ({"detector": "oracle"}, "the ceiling of simulated correction, not a method"),
    ({"folds": (0, 1)}, "scored cases of folds 0,1"),
])
def test_submit_refuses_an_oracle_or_partial_evaluation(change: dict[str, Any], says: str, finished: Path,
                                                        tiny_phantom: Path, tmp_path: Path, cli: Cli) -> None:
    if "folds" in change:  # only those folds' files
        preds = tmp_path / "preds"
        cases = pd.read_csv(finished / "cases.csv")
        keep = {f"{p}_{ph}.nii.gz" for p, ph, f in zip(cases["patient"], cases["phase"], cases["fold"], strict=True)
                if f in change["folds"]}
        preds.mkdir()
        for name in keep:
            shutil.copy(finished / "nifti" / "predictions" / name, preds / name)
        change = change | {"predictions": preds, "probabilities": None, "uncertainty_maps": None, "detector": None}
    evaluate.evaluate(_request(finished, tiny_phantom, tmp_path / "eval", **change))
    code, _, err = cli("submit", str(tmp_path / "eval"), "--leaderboards", str(tmp_path / "lb"))
    assert code == 2 and says in " ".join(err.split()), err
