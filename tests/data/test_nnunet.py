"""The nnU-Net raw layout reader (`--dataset nnunet`) against the ACDC reader on the same files, and its faults."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uqbench import config
from uqbench import run as runs
from uqbench.data.naming import phases
from uqbench.errors import DataError
from uqbench.registry import registry


def _reader(name: str, root: Path):  # type: ignore[no-untyped-def]
    return registry().create("dataset", name, root)


def test_the_nnunet_layout_gives_the_acdc_readers_cases_and_folds(tiny_phantom: Path, nnunet_phantom: Path) -> None:
    acdc, nnunet = _reader("acdc", tiny_phantom), _reader("nnunet", nnunet_phantom)
    assert nnunet.problems() == []
    assert dict(nnunet.folds()) == dict(acdc.folds())
    ours, theirs = list(acdc.cases()), list(nnunet.cases())
    assert [(c.patient, c.phase, c.group) for c in theirs] == [(c.patient, c.phase, c.group) for c in ours]
    for a, b in zip(ours, theirs, strict=True):
        assert a.spacing == b.spacing and np.array_equal(a.affine, b.affine) and a.header == b.header
        assert np.array_equal(a.image, b.image) and a.labels is not None and np.array_equal(a.labels, b.labels)
    assert nnunet.fingerprint() != acdc.fingerprint() and len(nnunet.fingerprint()) == 64


def test_phase_follows_frame_order_or_the_name() -> None:
    named, problems = phases(["patient090_frame11", "patient090_frame04", "patient002_ES", "patient002_ED"], "L")
    assert problems == []
    assert {s: n.phase for s, n in named.items()} == {"patient090_frame04": "ED", "patient090_frame11": "ES",
                                                      "patient002_ED": "ED", "patient002_ES": "ES"}


@pytest.mark.parametrize(("stems", "problem"), [
    (["patient001_frame01"], "L/patient001_frame01: patient001 needs exactly two frames to tell ED from ES"),
    (["patient001_frame01", "patient001_frame05", "patient001_frame09"], "patient001 needs exactly two frames"),
    (["patient001_frame01", "patient001_ED"], "beside ED"),
    (["case_01"], "L/case_01: not a case name (patientNNN_frameFF or patientNNN_ED/_ES)"),
])
def test_case_names_that_do_not_resolve_are_named(stems: list[str], problem: str) -> None:
    _, problems = phases(stems, "L")
    assert len(problems) == 1 and problem in problems[0]


def _damage(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "Dataset027_ACDC"
    shutil.copytree(root, dst)
    return dst


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda d: (d / "dataset.json").unlink(), "dataset.json: missing (not an nnU-Net raw dataset folder)"),
    (lambda d: (d / "dataset.json").write_text("{"), "dataset.json: unreadable (JSONDecodeError"),
    (lambda d: (d / "dataset.json").write_text(json.dumps({"channel_names": {"0": "a", "1": "b"}, "labels": {
        "background": 0, "RV": 1, "MLV": 2, "LVC": 3}})), "channel_names must name one input channel"),
    (lambda d: (d / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {
        "background": 0, "heart": 1}})), "labels must map four names to 0..3"),
    (lambda d: (d / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {
        "background": 0, "RV": 1, "MLV": 2, "LVC": 3}, "file_ending": ".mha"})), "file_ending '.mha'"),
    (lambda d: sorted((d / "labelsTr").iterdir())[0].unlink(), "_0000.nii.gz: no labels in"),
    (lambda d: sorted((d / "imagesTr").iterdir())[-1].unlink(), "_0000.nii.gz: missing (the image of"),
    (lambda d: sorted((d / "labelsTr").iterdir())[0].write_bytes(b"not gzip"), ".nii.gz: unreadable NIfTI"),
    (lambda d: shutil.rmtree(d / "labelsTr"), "labelsTr: missing"),
])
def test_a_damaged_nnunet_folder_is_one_line_naming_the_file(nnunet_phantom: Path, tmp_path: Path, damage,  # type: ignore[no-untyped-def]
                                                             problem: str) -> None:
    root = _damage(nnunet_phantom, tmp_path)
    damage(root)
    found = _reader("nnunet", root).problems()
    assert any(problem in line for line in found), found
    with pytest.raises(DataError):
        list(_reader("nnunet", root).cases())



@pytest.mark.e2e
def test_a_run_on_the_nnunet_layout_scores_as_on_the_acdc_layout(tiny_phantom: Path, nnunet_phantom: Path,
                                                                  tmp_path: Path, fresh_store: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def run(data: Path, dataset: str) -> Path:
        out = tmp_path / dataset
        monkeypatch.setenv("UQBENCH_CACHE", str(fresh_store / dataset))  # each computes every stage itself
        runs.run(config.resolve(segmenter="drn", uncertainty="bmap", detector="threshold", loss=None, data=data,
                                    dataset=dataset, folds=[0, 1], profile="quick", samples=3, device="cpu", seed=0,
                                    out=out, iterations=4))
        return out

    acdc, nnunet = run(tiny_phantom, "acdc"), run(nnunet_phantom, "nnunet")
    for table in ("cases.csv", "detection.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(nnunet / table), pd.read_csv(acdc / table))
