"""The run end to end on the tiny phantom: outputs, resume after interruption, refusal to mix settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from uqbench import config
from uqbench import run as runs
from uqbench.data import layout, nifti
from uqbench.data.folds import acdc_folds
from uqbench.devices import cpu_model
from uqbench.errors import DataError, UsageError
from uqbench.protocol import presets
from uqbench.protocol.metrics import dice
from uqbench.results import summary as summaries
from uqbench.run import graph, stages

pytestmark = pytest.mark.e2e  # every test here runs the pipeline


def _cfg(data: Path | None, out: Path, **kw: Any) -> config.RunConfig:
    args: dict[str, Any] = dict(segmenter="drn", uncertainty="bmap", detector="threshold", loss=None, data=data,
                                dataset="acdc", folds=[0, 1], profile="quick", samples=3, device="cpu", seed=0, out=out,
                                iterations=4)
    args.update(kw)
    return config.resolve(**args)


def test_run_writes_config_cases_summary_and_detection(tiny_phantom: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_phantom, tmp_path / "run")
    summary = runs.run(cfg)
    out = tmp_path / "run"
    written = json.loads((out / "config.json").read_text())
    assert written["recipe"]["iterations"] == 4 and written["profile"] == "quick" and written["samples"] == 3
    assert written["machine"] == {"cpu": cpu_model(), "cuda": None} and written["precision"] == cfg.precision
    cases = pd.read_csv(out / "cases.csv")
    assert len(cases) == 2 * 2 * 3  # two test patients (folds 0, 1) x ED/ES x RV/MYO/LV
    assert cases["dice"].between(0, 1).all() and cases["dice_corrected"].between(0, 1).all()
    assert (cases["hd"] >= cases["hd95"]).all() and (cases["assd"] >= 0).all() and cases["hd_corrected"].notna().all()
    assert set(cases["fold"]) == {0, 1}
    assert summary.segmentation.volumes == 4
    assert json.loads((out / "summary.json").read_text())["segmentation"]["volumes"] == 4
    det = pd.read_csv(out / "detection.csv")
    assert (det["true_positive_patches"] <= det["flagged_patches"]).all()
    assert summary.protocol.name == "uqbench" and summary.protocol.failure_rule.name == "paper"
    tag = f"uqbench {summary.protocol.digest()}"  # every table names the preset that made it
    assert set(cases["protocol"]) == {tag} and set(det["protocol"]) == {tag}
    tested = [c for c in layout.iter_cases(tiny_phantom) if c.patient in set(cases["patient"])]
    assert len(tested) == 4
    for case in tested:  # NIfTI outputs in original geometry, source affine
        name = f"{case.patient}_{case.phase}.nii.gz"
        labels, _, affine = nifti.read(out / "nifti" / "predictions" / name)
        probs = np.asarray(nib.load(out / "nifti" / "probabilities" / name).dataobj).transpose(3, 2, 1, 0)
        unc, _, _ = nifti.read(out / "nifti" / "uncertainty-maps" / name)
        assert labels.shape == case.labels.shape and np.allclose(affine, case.affine)
        assert probs.shape == (4, *case.labels.shape) and np.allclose(probs.sum(0), 1, atol=2.5e-3)
        assert unc.min() >= 0 and unc.max() <= 1 + 1e-4
        row = cases[(cases["patient"] == case.patient) & (cases["phase"] == case.phase) & (cases["class"] == "LV")]
        assert dice(labels, case.labels, 3) == pytest.approx(float(row["dice"].iloc[0]), abs=1e-6)
    assert summary.protocol.digest() == written["protocol"]["hash"]
    # both files read back as the values the run returned
    assert config.read(out / "config.json") == cfg
    text = (out / "summary.json").read_text()
    assert json.dumps(summaries.read(out / "summary.json").record(), indent=1) == text
    damaged = json.loads(text)
    damaged["segmentation"]["dice"]["ED"]["LV"]["mean"] = "high"
    (out / "summary.json").write_text(json.dumps(damaged))
    with pytest.raises(DataError, match=r"malformed summary: summary\.segmentation\.dice\.ED\.LV\.mean: expected a "
                                        r"number, got 'high'"):
        summaries.read(out / "summary.json")


def test_the_seed_code_protocol_reports_every_measure_by_the_authors_conventions(tiny_phantom: Path,
                                                                                   tmp_path: Path) -> None:
    summary = runs.run(_cfg(tiny_phantom, tmp_path / "run", protocol="seed-code"))
    cases = pd.read_csv(tmp_path / "run" / "cases.csv")
    p = summary.protocol
    assert (p.label, p.failure_rule.name, p.correction, p.detector_training) == \
        ("seed-code", "seed-code", "failures-only", "in-sample")
    assert cases["dice_corrected"].mean() >= cases["dice"].mean()  # failures-only correction removes errors
    rc = summary.risk_coverage
    assert rc.measure == "error-count" and rc.volumes == 4 and rc.e_aurc >= -1e-12 and rc.aurc >= rc.e_aurc
    cal = summary.calibration
    assert sum(cal.pooled.voxels) == 4 * cal.voxels and 0 <= cal.brier <= 2
    assert set(cal.per_class) == {"background", "RV", "MYO", "LV"}
    lv_ef = summary.clinical.indices["lv_ef"]
    assert summary.clinical.patients == 2 and lv_ef.n + lv_ef.undefined == 2
    assert summary.clinical.indices["lv_edv"].n == 2 and summary.clinical.units["lv_edv"] == "mL"
    assert summary.clinical.myocardial_density == 1.04
    assert summary.clinical_corrected is not None
    assert summary.clinical_corrected.indices["lv_edv"].mae <= summary.clinical.indices["lv_edv"].mae + 1e-9
    assert summary.detection_curves is not None and summary.correction_effort is not None
    froc, slices = summary.detection_curves.froc, summary.detection_curves.slices
    assert froc.convention == "per-volume" and len(froc.threshold) == 40
    assert froc.sensitivity == sorted(froc.sensitivity, reverse=True)  # thresholds rise
    assert slices.ap_convention == "authors-40" and 0 <= slices.ap <= 1 and 0 <= slices.ap_pooled <= 1
    effort = summary.correction_effort.points
    assert effort[0].share_of_patches == 0 and effort[-1].share_of_patches == 1
    assert effort[0].dice == pytest.approx(cases["dice"].mean())  # nothing flagged: nothing corrected
    assert summary.significance is not None and summary.significance.mann_whitney == "one-sided-legacy"
    sig = summary.significance.dice["ED"]["LV"]
    assert 0 <= sig.wilcoxon_p <= 1 and sig.n == 2 and sig.mann_whitney_p <= 0.5


def test_the_sander2020_protocol_detects_with_one_fold_by_the_papers_conventions(tiny_phantom: Path,
                                                                                  tmp_path: Path) -> None:
    summary = runs.run(_cfg(tiny_phantom, tmp_path / "run", protocol="sander2020", folds=[0]))
    assert summary.protocol.label == "sander2020" and summary.corrected is not None  # in-sample: one fold is enough
    assert summary.risk_coverage.measure == "error-count" and summary.clinical.myocardial_density == 1.05
    assert summary.detection_curves is not None and summary.detection_curves.froc.convention == "per-volume"
    assert summary.significance is not None and summary.significance.mann_whitney == "two-sided"


def test_out_folder_with_other_settings_is_refused(tiny_phantom: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    runs.run(_cfg(tiny_phantom, out, folds=[0], detector=None))
    with pytest.raises(UsageError, match="holds a run with other settings \\(uncertainty, samples\\)"):
        runs.run(_cfg(tiny_phantom, out, folds=[0], detector=None, uncertainty="emap", samples=None))


def test_out_folder_of_another_protocol_or_override_is_refused(tiny_phantom: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    runs.run(_cfg(tiny_phantom, out, folds=[0], detector=None))
    with pytest.raises(UsageError, match="holds a run with other settings \\(protocol\\)"):
        runs.run(_cfg(tiny_phantom, out, folds=[0], detector=None, protocol="sander2020"))
    with pytest.raises(UsageError, match="holds a run with other settings \\(protocol\\)"):
        runs.run(_cfg(tiny_phantom, out, folds=[0], detector=None, correction="failures-only"))


def test_single_fold_run_notes_that_the_detector_needs_two_folds(tiny_phantom: Path, tmp_path: Path) -> None:
    summary = runs.run(_cfg(tiny_phantom, tmp_path / "run", folds=[0]))
    assert summary.corrected is None and "needs 2 or more --folds" in summary.notes[0]


@pytest.mark.slow
def test_quick_profile_on_the_phantom_is_learnable_but_not_trivial(tmp_path: Path) -> None:
    """The default data and recipe, fold 0: mean foreground Dice between 0.75 and 0.95 (full 4-fold run: 0.84)."""
    cfg = _cfg(None, tmp_path / "run", folds=[0], detector=None, samples=None, iterations=None)
    summary = runs.run(cfg)
    assert 0.75 <= summary.segmentation.mean_foreground_dice <= 0.95, summary.segmentation.dice


@pytest.mark.parametrize(("segmenter", "uncertainty"), [("dn", "mi"), ("unet", "maxprob"),
                                                        ("smp:unet:resnet18", "bmap")])
def test_every_paper_segmenter_and_estimator_runs_end_to_end(tiny_phantom: Path, tmp_path: Path, segmenter: str,
                                                             uncertainty: str) -> None:
    cfg = _cfg(tiny_phantom, tmp_path / "run", segmenter=segmenter, uncertainty=uncertainty, folds=[0],
               detector=None, iterations=2, samples=2)
    summary = runs.run(cfg)
    assert summary.segmentation.volumes == 2 and 0 <= summary.segmentation.mean_foreground_dice <= 1
    assert summary.provenance.methods["segmenter"].spec == segmenter
    expected_loss = "brier" if segmenter == "dn" else "ce"  # the paper's per-architecture choice
    assert json.loads((tmp_path / "run" / "config.json").read_text())["loss"] == expected_loss


def test_config_records_the_resolved_precision(tiny_phantom: Path, tmp_path: Path) -> None:
    from uqbench.devices import resolve_precision

    assert _cfg(tiny_phantom, tmp_path / "a").precision == resolve_precision("auto", "cpu")
    assert _cfg(tiny_phantom, tmp_path / "b", precision="bf16").precision == "bf16"


def test_a_bad_detector_argument_is_refused_before_any_work(tiny_phantom: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="detector 'sresnet:0': bad arguments"):
        _cfg(tiny_phantom, tmp_path / "run", detector="sresnet:0")
    assert not (tmp_path / "run").exists()



class _Recorder:
    """A detector wrapper recording the image slices each instance (one per fold, in fold order) learns from and
    scores."""

    log: ClassVar[list[tuple[str, int, bytes]]] = []
    made: ClassVar[int] = 0

    def __init__(self, real: Any) -> None:
        self.real, self.id = real, _Recorder.made
        _Recorder.made += 1

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)

    def fit(self, examples: Any, ctx: Any) -> None:
        self.log.extend(("fit", self.id, ex.image.tobytes()) for ex in examples)
        self.real.fit(examples, ctx)

    def predict(self, example: Any) -> Any:
        self.log.append(("predict", self.id, example.image.tobytes()))
        return self.real.predict(example)


@pytest.mark.parametrize("mode", ["in-sample", "out-of-fold"])
def test_no_detector_is_evaluated_on_a_patient_it_learnt_from(tiny_phantom: Path, tmp_path: Path, fresh_store: Path,
                                                             monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """In-sample (paper V-B), fold k's detector learns from fold k's own training patients; out of fold, from
    the other run folds' test patients, never from fold k's. Either way it scores only fold k's patients."""
    real, real_examples = graph.registry(), stages.examples
    patient_of: dict[bytes, str] = {}  # an image slice, as the detector sees it -> its patient

    class Registry:
        def __getattr__(self, attr: str) -> object:
            return getattr(real, attr)

        def create(self, kind: Any, spec: str, *args: object) -> object:
            method = real.create(kind, spec, *args)
            return _Recorder(method) if kind.name == "detector" else method

    def examples(v: Any, image: np.ndarray, with_failures: bool) -> Any:
        patient_of.update((image[z].tobytes(), v.patient) for z in range(image.shape[0]))
        return real_examples(v, image, with_failures)

    _Recorder.log, _Recorder.made = [], 0
    monkeypatch.setattr(graph, "registry", Registry)
    monkeypatch.setattr(stages, "examples", examples)
    runs.run(_cfg(tiny_phantom, tmp_path / "run", detector_training=mode, folds=[0, 1]))
    fold_of = {p: f for p, f in acdc_folds().items() if (tiny_phantom / p).is_dir()}
    assert sorted(fold_of.values()) == [0, 1, 2, 3]  # one patient per fold
    for k in (0, 1):
        fit = {patient_of[b] for what, who, b in _Recorder.log if what == "fit" and who == k}
        scored = {patient_of[b] for what, who, b in _Recorder.log if what == "predict" and who == k}
        assert scored == {p for p, f in fold_of.items() if f == k}
        assert not fit & scored
        if mode == "in-sample":
            assert fit == {p for p, f in fold_of.items() if f != k}  # every training patient of fold k
        else:
            assert fit == {p for p, f in fold_of.items() if f == 1 - k}  # the other run fold's test patient


def test_in_sample_detection_runs_with_one_fold_and_is_recorded_as_an_override(tiny_phantom: Path,
                                                                                tmp_path: Path) -> None:
    summary = runs.run(_cfg(tiny_phantom, tmp_path / "run", folds=[0], detector_training="in-sample"))
    assert summary.corrected is not None and summary.notes == []
    protocol = json.loads((tmp_path / "run" / "config.json").read_text())["protocol"]
    assert protocol["detector_training"] == "in-sample" and protocol["overrides"] == ["detector-training=in-sample"]
    assert protocol["hash"] != presets.UQBENCH.digest()
