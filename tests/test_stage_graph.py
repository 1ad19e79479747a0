"""The run as cached stages: what a second run reuses, what it recomputes and why, and what an interrupted or
concurrent run leaves behind (issue 12)."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from uqbench import config
from uqbench import run as runs
from uqbench.data import nifti
from uqbench.errors import PluginError, UsageError
from uqbench.protocol.metrics import dice
from uqbench.records import fields_to_json
from uqbench.registry import registry
from uqbench.run.graph import LATER_RECIPE_FIELDS, recipe_key

pytestmark = pytest.mark.e2e  # every test here runs the pipeline


def _cfg(data: Path, out: Path, **kw: Any) -> config.RunConfig:
    args: dict[str, Any] = dict(segmenter="drn", uncertainty="bmap", detector="threshold", loss=None, data=data,
                                dataset="acdc", folds=[0, 1], profile="quick", samples=3, device="cpu", seed=0, out=out,
                                iterations=4)
    args.update(kw)
    return config.resolve(**args)


def _served(summary: Any) -> dict[tuple[str, int, str, str], bool]:
    """(stage, fold, cases, detail) -> whether it came from the store."""
    return {(r.stage, r.fold, r.cases, r.detail): r.from_store for r in summary.stages}


def _no_training_or_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    from uqbench.infer import sampling
    from uqbench.train import loop

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained or predicted again")

    for module, name in ((loop, "train"), (sampling, "sample_volume"), (sampling, "predict_volume")):
        monkeypatch.setattr(module, name, refuse)


def test_a_second_map_after_the_first_trains_nothing_and_runs_no_inference(
        tiny_phantom: Path, tmp_path: Path, fresh_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = runs.run(_cfg(tiny_phantom, tmp_path / "bmap"))
    assert not any(_served(first).values())  # a fresh store: everything computed
    _no_training_or_inference(monkeypatch)
    for umap in ("emap", "mi", "maxprob"):
        samples = None if umap == "emap" else 3  # emap: its one deterministic pass; the others: bmap's T
        summary = runs.run(_cfg(tiny_phantom, tmp_path / umap, uncertainty=umap, samples=samples))
        served = _served(summary)
        assert all(v for (stage, *_), v in served.items() if stage in ("train", "predict")), served
        assert not served[("maps", 0, "test", "")] and summary.segmentation.volumes == 4
    for name in (p.name for p in (tmp_path / "bmap" / "nifti" / "probabilities").glob("*.nii.gz")):
        emap = np.asarray(nib.load(tmp_path / "emap" / "nifti" / "probabilities" / name).dataobj)  # one pass
        bmap = np.asarray(nib.load(tmp_path / "bmap" / "nifti" / "probabilities" / name).dataobj)  # not MC mean
        assert emap.shape == bmap.shape and not np.allclose(emap, bmap)


def test_another_detector_failure_rule_or_correction_reuses_every_prediction_and_map(
        tiny_phantom: Path, tmp_path: Path, fresh_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs.run(_cfg(tiny_phantom, tmp_path / "first"))
    _no_training_or_inference(monkeypatch)
    for i, change in enumerate([{"detector": "sresnet:3"}, {"failure_preset": "seed-code"},
                                {"correction": "failures-only"}]):
        summary = runs.run(_cfg(tiny_phantom, tmp_path / str(i), **change))
        served = _served(summary)
        assert all(v for (stage, *_), v in served.items() if stage in ("train", "predict", "maps"))
        # the failure rule is part of scoring; a detector or a correction mode is not
        assert all(v != ("failure_preset" in change) for (stage, *_), v in served.items() if stage == "score")
        assert not served[("detect", 0, "test", "")] or "correction" in change  # correction is not a stored stage
        assert summary.corrected is not None


def test_a_new_plugin_version_is_recomputed_from_its_stage_on_and_the_summary_says_why(
        tiny_phantom: Path, tmp_path: Path, fresh_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tiny_phantom, tmp_path / "run", folds=[0, 1])
    before = runs.run(cfg)
    entries = registry().entries
    entries["detector"]["threshold"] = replace(entries["detector"]["threshold"], version="9.9")
    summary = runs.run(cfg)
    served = _served(summary)
    assert not served[("detect", 0, "test", "")] and served[("train", 0, "training", "")]
    assert "detect of fold 0, test patients, recomputed: plugins.detector.version '0.1.0' -> '9.9'" in summary.notes
    monkeypatch.setattr(entries["detector"]["threshold"].factory, "cache_version", 2, raising=False)
    summary = runs.run(cfg)
    assert not _served(summary)[("detect", 1, "test", "")] and _served(summary)[("maps", 1, "test", "")]
    assert "detect of fold 1, test patients, recomputed: plugins.detector.cache_version None -> 2" in summary.notes
    entries["segmenter"]["drn"] = replace(entries["segmenter"]["drn"], version="2.0")
    summary = runs.run(cfg)
    assert not any(_served(summary).values())  # training and everything after it
    assert "train of fold 1, training patients, recomputed: plugins.segmenter.version '0.1.0' -> '2.0'" \
        in summary.notes
    assert "maps of fold 1, test patients, recomputed: an input it reads was recomputed" in summary.notes
    assert summary.segmentation == before.segmentation  # same code, same seed: the same numbers


def test_another_cpu_thread_count_recomputes_the_network_stages_and_the_summary_says_why(
        tiny_phantom: Path, tmp_path: Path, fresh_store: Path) -> None:
    import torch

    cfg = _cfg(tiny_phantom, tmp_path / "run", folds=[0, 1])
    threads = torch.get_num_threads()
    runs.run(cfg)
    torch.set_num_threads(threads + 1)
    try:
        summary = runs.run(cfg)
    finally:
        torch.set_num_threads(threads)
    served = _served(summary)
    assert not served[("train", 0, "training", "")] and not served[("detect", 1, "test", "")]
    assert (f"train of fold 0, training patients, recomputed: settings.cpu_threads {threads} -> {threads + 1}"
            in summary.notes)
    assert summary.provenance.cpu_threads == threads + 1
    assert all(_served(runs.run(cfg)).values())  # back on the first count: every stage from the store


def test_another_number_of_inputs_per_network_call_recomputes_the_predictions_and_the_summary_says_why(
        tiny_phantom: Path, tmp_path: Path, fresh_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tiny_phantom, tmp_path / "run", folds=[0, 1])
    runs.run(cfg)
    monkeypatch.setattr(type(registry().create("segmenter", "drn")), "cpu_inputs_per_call", 2, raising=False)
    summary = runs.run(cfg)
    served = _served(summary)
    assert served[("train", 0, "training", "")] and not served[("predict", 1, "test", "mc-dropout T=3")]
    assert ("predict (mc-dropout T=3) of fold 1, test patients, recomputed: settings.chunk None -> 2"
            in summary.notes), summary.notes


def test_a_bad_inputs_per_call_declaration_is_reported_naming_the_segmenter(
        tiny_phantom: Path, tmp_path: Path, fresh_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(registry().create("segmenter", "drn")), "cpu_inputs_per_call", 0, raising=False)
    with pytest.raises(PluginError, match=r"drn.*cpu_inputs_per_call must be a positive int, not 0"):
        runs.run(_cfg(tiny_phantom, tmp_path / "run", folds=[0]))


def test_force_recomputes_the_named_stage_and_every_later_one(tiny_phantom: Path, tmp_path: Path,
                                                              fresh_store: Path) -> None:
    cfg = _cfg(tiny_phantom, tmp_path / "run")
    before = runs.run(cfg)
    summary = runs.run(cfg, force="maps")
    assert {s for (s, *_), v in _served(summary).items() if not v} == {"maps", "score", "detect"}
    assert summary.segmentation == before.segmentation and summary.detection == before.detection
    assert {r.why for r in summary.stages if not r.from_store} == {"forced"}
    with pytest.raises(UsageError, match=r"--force 'infer': expected one of train, predict, maps, score, detect"):
        runs.run(cfg, force="infer")


def test_a_changed_reference_label_file_rescores_its_case(phantom_copy: Path, tmp_path: Path,
                                                          fresh_store: Path) -> None:
    cfg = _cfg(phantom_copy, tmp_path / "run", folds=[0], detector=None)
    runs.run(cfg)
    before = pd.read_csv(tmp_path / "run" / "cases.csv")
    patient, phase = before["patient"].iloc[0], before["phase"].iloc[0]
    frame = {"ED": 0, "ES": 1}[phase]
    ref_path = sorted((phantom_copy / patient).glob(f"{patient}_frame*_gt.nii.gz"))[frame]
    labels, _, affine = nifti.read(ref_path)
    labels = np.where(labels == 3, 2, labels).astype(np.uint8)  # the LV cavity relabelled as myocardium
    nifti.write(ref_path, labels, affine)
    summary = runs.run(cfg)
    after = pd.read_csv(tmp_path / "run" / "cases.csv")
    predicted, _, _ = nifti.read(tmp_path / "run" / "nifti" / "predictions" / f"{patient}_{phase}.nii.gz")
    def myo(rows: pd.DataFrame) -> pd.Series:
        return rows[(rows["patient"] == patient) & (rows["phase"] == phase) & (rows["class"] == "MYO")].iloc[0]

    assert myo(after)["reference_voxels"] == (labels == 2).sum() != myo(before)["reference_voxels"]
    assert float(myo(after)["dice"]) == pytest.approx(dice(predicted, labels, 2), abs=1e-6)
    assert not _served(summary)[("score", 0, "test", "")]


def test_a_truncated_prepared_case_is_prepared_again_and_the_run_says_so(tiny_phantom: Path, tmp_path: Path,
                                                                         fresh_store: Path) -> None:
    cfg = _cfg(tiny_phantom, tmp_path / "run", folds=[0], detector=None)
    before = runs.run(cfg)
    case = sorted(fresh_store.glob("prepared/*/*.xz"))[0]
    case.write_bytes(case.read_bytes()[:100])
    summary = runs.run(cfg)
    assert any(n.startswith("prepared data ") and f"{case.name} does not match its sha256; prepared again" in n
               for n in summary.notes), summary.notes
    assert summary.segmentation == before.segmentation and all(_served(summary).values())


def test_a_run_folder_holds_its_own_copies_of_the_store_files_and_a_rerun_restores_an_edited_one(
        tiny_phantom: Path, tmp_path: Path) -> None:
    """Editing (or damaging) a run's NIfTI in place must not reach the stage store, nor any other run folder that
    reads the same stage; running the same run again puts the stored file back."""
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        runs.run(_cfg(tiny_phantom, out, folds=[0], detector=None))
    files = sorted((first / "nifti").rglob("*.nii.gz"))
    assert len(files) > 3 and all(f.stat().st_nlink == 1 for f in files)
    edited = files[0]
    twin = second / edited.relative_to(first)
    stored = twin.read_bytes()
    with edited.open("r+b") as f:  # in place, as an editor saving over the file would
        f.write(b"damaged")
    assert twin.read_bytes() == stored  # the other run and the store are untouched
    runs.run(_cfg(tiny_phantom, first, folds=[0], detector=None))
    assert edited.read_bytes() == stored


def test_a_second_run_into_a_busy_out_folder_is_refused(tiny_phantom: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)  # what a run holds while it works
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(UsageError, match=f"--out {out}: another uqbench command is writing there now"):
            runs.run(_cfg(tiny_phantom, out, folds=[0], detector=None))
    finally:
        os.close(fd)
    assert list(out.iterdir()) == []


# Processes: killed at any moment, or two at once.
def _command(data: Path, out: Path, *, folds: str = "0,1", extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "uqbench", "run", "--data", str(data), "--out", str(out), "--folds", folds,
            "--samples", "3", *extra]


def _results(out: Path) -> dict[str, Any]:
    """What a run measured, without its timings and which stages came from the store."""
    summary = json.loads((out / "summary.json").read_text())
    for volatile in ("timings_s", "stages", "notes"):
        summary.pop(volatile)
    return {"summary": summary, "cases": (out / "cases.csv").read_text(),
            "detection": (out / "detection.csv").read_text()}


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    t0 = time.monotonic()
    while not any(root.glob(pattern)):
        assert proc.poll() is None, f"the run ended before {pattern} appeared"
        assert time.monotonic() - t0 < timeout, f"{pattern} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_run_killed_in_training_inference_and_detector_fitting_ends_as_the_uninterrupted_one(
        tiny_phantom: Path, tmp_path: Path) -> None:
    """kill -9 while fold 0 trains (after its first checkpoint), while it predicts (a case written) and while its
    detector trains (after the detector's first checkpoint); the same command then finishes with the results of a
    run never interrupted."""
    command = functools.partial(_command, tiny_phantom, folds="0", extra=(
        "--iterations", "60", "--detector", "sresnet:60", "--detector-training", "in-sample"))  # checkpoints at 50
    env = os.environ | {"UQBENCH_CACHE": str(tmp_path / "reference-store")}
    subprocess.run(command(tmp_path / "reference"), env=env, check=True, capture_output=True)
    env["UQBENCH_CACHE"] = str(tmp_path / "store")
    for moment in ("stages/train/*.part/checkpoint.pt", "stages/predict/*.part/patient*.npz",
                   "stages/detect/*.part/workdir/*"):
        proc = subprocess.Popen(command(tmp_path / "run"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _wait_for(moment, tmp_path / "store", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    subprocess.run(command(tmp_path / "run"), env=env, check=True, capture_output=True)
    assert _results(tmp_path / "run") == _results(tmp_path / "reference")


def test_two_runs_of_one_cell_at_once_compute_each_stage_once_and_agree(tiny_phantom: Path, tmp_path: Path) -> None:
    env = os.environ | {"UQBENCH_CACHE": str(tmp_path / "store")}
    procs = [subprocess.Popen(_command(tiny_phantom, tmp_path / name, extra=("--iterations", "20", "--detector",
                                                                               "threshold")), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    assert _results(tmp_path / "a") == _results(tmp_path / "b")
    stages = [json.loads((tmp_path / name / "summary.json").read_text())["stages"] for name in ("a", "b")]
    for a, b in zip(*stages, strict=True):  # each stage computed by exactly one of the two
        assert a["key"] == b["key"] and a["from_store"] != b["from_store"], (a, b)


def test_a_recipe_keeps_its_train_key_when_later_fields_hold_their_old_values() -> None:
    recipe = replace(registry().create("segmenter", "unet").recipe(config.Profile.CPU), max_turn=180.0)
    before = {k: v for k, v in fields_to_json(recipe).items() if k not in LATER_RECIPE_FIELDS}
    assert recipe_key(recipe) == before  # max_turn 180: every model stored before the field existed serves
    assert recipe_key(replace(recipe, max_turn=15.0)) == before | {"max_turn": 15.0}
