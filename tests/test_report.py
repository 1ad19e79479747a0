"""`uqbench report`: every figure as a real PNG, a report.md that shows them with the run's numbers, curves of
several runs overlaid, example slices read from the stage store (and left out, with the reason, when it no longer
holds them)."""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.image import imread

from uqbench.report import _chosen, figures
from uqbench.results.summary import read as read_summary

CURVES = ["reliability.png", "risk_coverage.png", "detection.png", "correction_effort.png"]


def _png(path: Path) -> tuple[int, ...]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    shape: tuple[int, ...] = imread(path).shape
    return shape


@pytest.mark.usefixtures("example_plugin")
def test_report_draws_every_figure_and_a_markdown_that_shows_them(example_runs: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "report"
    code, _, err = cli("report", str(example_runs / "full"), "--out", str(out))
    assert code == 0, err
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted([*CURVES, "run_boxes.png", "run_example_median.png", "run_example_worst.png"])
    for name in pngs:
        height, width, _ = _png(out / name)
        assert height > 300 and width > 500
    doc = (out / "report.md").read_text()
    for name in pngs:
        assert f"]({name})" in doc
    summary = read_summary(example_runs / "full" / "summary.json")
    assert f"mean foreground Dice {summary.segmentation.mean_foreground_dice:.3f}" in doc
    assert f"AURC {summary.risk_coverage.aurc:.4g}" in doc
    assert f"protocol uqbench ({summary.protocol.digest()})" in doc
    lv = summary.segmentation.dice["ED"]["LV"]
    assert f"| ED | LV | {lv.mean:.3f} ± {lv.sd:.3f} |" in doc


@pytest.mark.usefixtures("example_plugin")
def test_report_over_several_runs_overlays_their_curves(example_runs: Path, tmp_path: Path, cli) -> None:
    code, _, err = cli("report", str(example_runs / "full"), str(example_runs / "maxprob"))
    assert code == 2 and "--out: name a folder for a report over several runs" in err
    out = tmp_path / "both"
    code, _, err = cli("report", str(example_runs / "full"), str(example_runs / "maxprob"), "--out", str(out),
                       "--no-examples")
    assert code == 0, err
    assert {p.name for p in out.glob("*.png")} == {*CURVES, "run1_boxes.png", "run2_boxes.png"}
    doc = (out / "report.md").read_text()
    assert "## example-net · example-maxvar · example-everywhere" in doc
    assert "## example-net · maxprob · example-everywhere" in doc

    runs = [figures.Run(label=name, summary=read_summary(example_runs / name / "summary.json"),
                        cases=pd.read_csv(example_runs / name / "cases.csv")) for name in ("full", "maxprob")]
    (ax,) = figures.risk_coverage(runs).axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == [f"{r.label} (AURC {r.summary.risk_coverage.aurc:.4g}, e-AURC "
                      f"{r.summary.risk_coverage.e_aurc:.4g})" for r in runs]
    froc, pr = figures.detection(runs).axes  # type: ignore[union-attr]
    assert len(froc.get_lines()) == len(pr.get_lines()) == 2
    assert [line.get_label() for line in pr.get_lines()][1].endswith(
        f"(AP {runs[1].summary.detection_curves.slices.ap:.3f})")  # type: ignore[union-attr]


@pytest.mark.usefixtures("example_plugin")
def test_report_leaves_out_example_slices_the_store_no_longer_holds(example_runs: Path, tmp_path: Path, cli,
                                                                  fresh_store: Path) -> None:
    out = tmp_path / "report"
    code, stdout, err = cli("report", str(example_runs / "full"), "--out", str(out))
    assert code == 0, err
    assert "example slices left out" in stdout and "no longer holds train of fold 0" in stdout
    assert not list(out.glob("*example*")) and (out / "run_boxes.png").is_file()
    assert "Example slices left out" in (out / "report.md").read_text()


def test_report_without_matplotlib_names_the_extra(example_runs: Path, tmp_path: Path, cli,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets when it is absent
    code, _, err = cli("report", str(example_runs / "full"), "--out", str(tmp_path / "r"))
    assert code == 2 and "pip install 'uqbench[report]'" in err


@pytest.mark.usefixtures("example_plugin")
def test_report_refuses_a_cases_table_that_is_not_its_summarys(example_runs: Path, tmp_path: Path, cli) -> None:
    run = tmp_path / "run"
    shutil.copytree(example_runs / "full", run)
    lines = (run / "cases.csv").read_text().splitlines(keepends=True)
    (run / "cases.csv").write_text("".join(lines[:7]))  # cut short: two volumes of eight
    code, _, err = cli("report", str(run), "--out", str(tmp_path / "r"))
    assert code == 2 and f"{run / 'cases.csv'}: 6 rows of 2 volumes, where summary.json scored 8 volumes" in err
    assert not (tmp_path / "r" / "report.md").exists()


def test_report_of_a_folder_that_is_not_a_run_is_one_line(tmp_path: Path, cli) -> None:
    code, _, err = cli("report", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 2 and re.fullmatch(r"error: .*config\.json: missing \(not a run folder\)\n", err)


def test_examples_are_the_worst_and_the_median_volume() -> None:
    rows = [{"patient": p, "phase": ph, "class": c, "dice": d}
            for p, ph, dice in (("p1", "ED", 0.9), ("p1", "ES", 0.2), ("p2", "ED", 0.5), ("p2", "ES", 0.7),
                                ("p3", "ED", 0.6))
            for c, d in (("RV", dice - 0.1), ("MYO", dice), ("LV", dice + 0.1))]
    chosen = _chosen(pd.DataFrame(rows))
    assert [(w, p, ph) for w, p, ph, _ in chosen] == [("worst", "p1", "ES"), ("median", "p3", "ED")]
    assert chosen[0][3] == pytest.approx(0.2) and chosen[1][3] == pytest.approx(0.6)


def test_example_figure_shows_six_panels_per_slice_with_the_most_failures() -> None:
    import numpy as np

    from uqbench.protocol.presets import UQBENCH
    from uqbench.scoring.case import Volume

    z, y, x = 5, 32, 40
    failures = np.zeros((z, y, x), bool)
    failures[3, 4:10, 4:10] = True  # slice 3 holds the most failure voxels, then 1, then 4
    failures[1, 0:3, 0:3] = True
    failures[4, 0, 0] = True
    probs = np.zeros((z, 4, 5), np.float32)
    probs[3, 0, 0] = 0.9
    v = Volume(patient="p", phase="ED", group="NOR", fold=0, spacing=(10.0, 1.4, 1.4),
               reference=np.zeros((z, y, x), np.uint8), prediction=np.ones((z, y, x), np.uint8),
               reference_grid=np.zeros((z, y, x), np.uint8),
               prediction_grid=np.ones((z, y, x), np.uint8), uncertainty=np.full((z, y, x), 0.5, np.float16),
               failures=failures, patch_probs=probs)
    fig = figures.example(v, np.random.default_rng(0).random((z, y, x)).astype(np.float32), protocol=UQBENCH,
                          title="t")
    rows = [ax for ax in fig.axes if ax.get_ylabel().startswith("slice")]
    assert [ax.get_ylabel() for ax in rows] == ["slice 1", "slice 3", "slice 4"]
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == \
        ["image", "reference", "prediction", "failure voxels", "uncertainty", "flagged patches"]
    slice3_flags = fig.axes[6 + 5].get_images()[1].get_array()  # row 2 (slice 3), column 6: the flagged overlay
    assert not np.ma.getmaskarray(slice3_flags)[:8, :8].any()  # the one patch above 0.5, 8 x 8 voxels
    assert np.ma.getmaskarray(slice3_flags)[8:, :].all() and np.ma.getmaskarray(slice3_flags)[:, 8:].all()


def test_examples_show_the_box_around_the_heart_and_no_detector_column_without_one() -> None:
    import numpy as np

    from uqbench.protocol.presets import UQBENCH
    from uqbench.scoring.case import Volume

    z, y, x = 3, 120, 150
    ref = np.zeros((z, y, x), np.uint8)
    ref[1, 40:50, 60:75] = 3  # rows 40-49, columns 60-74
    pred = np.zeros_like(ref)
    pred[2, 45:52, 100:101] = 1  # reaches column 100 and row 51
    v = Volume(patient="p", phase="ES", group="NOR", fold=0, spacing=(10.0, 1.4, 1.4), reference=ref,
               prediction=pred, reference_grid=ref, prediction_grid=pred, uncertainty=np.zeros((z, y, x), np.float16),
               failures=np.zeros((z, y, x), bool))
    assert figures.heart_box(v) == ((40 - 24, 52 + 24), (60 - 24, 101 + 24))
    assert figures.heart_box(v, margin=100) == ((0, 120), (0, 150))  # clipped to the slice
    assert figures.heart_box(replace(v, reference_grid=ref * 0, prediction_grid=ref * 0)) == ((0, 120), (0, 150))
    fig = figures.example(v, np.zeros((z, y, x), np.float32), protocol=UQBENCH, title="t")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == \
        ["image", "reference", "prediction", "failure voxels", "uncertainty"]
    assert fig.axes[0].get_xlim() == (36 - 0.5, 125 - 0.5) and fig.axes[0].get_ylim() == (76 - 0.5, 16 - 0.5)
