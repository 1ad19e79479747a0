"""`uqbench bench evaluate`: ``uqbench evaluate`` timed side by side with nnU-Net's own evaluator
(``nnunetv2.evaluation.evaluate_predictions.compute_metrics_on_folder``) on the same files, and their Dice compared.

One fold's reference label maps of an ACDC-layout folder get synthetic errors (``uqbench.bench.metrics._errors``)
and are written, with the references, by nnU-Net's ``SimpleITKIO`` under nnU-Net's case names, so both tools read
files nnU-Net wrote. nnU-Net scores them (Dice, IoU and voxel counts; timed with its default 8 worker processes
and with one per core, the ratio taken against the faster); uqbench
scores them with every protocol measure (Dice, HD, HD95, ASSD, volumes, failure labels on the 1.4 mm grid). Both
are timed in this process after their imports and after the data are prepared, so the figure is the scoring, not
start-up; nnU-Net's Dice is the independent reference every one of ours must equal.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.api import Profile
from uqbench.bench.metrics import _errors
from uqbench.data import layout
from uqbench.data.folds import acdc_folds
from uqbench.errors import UsageError
from uqbench.protocol import presets
from uqbench.scoring import folder as evaluate

LABELS = (1, 2, 3)  # RV, myocardium, LV: nnU-Net's labels for ACDC, our CLASS_NAMES[1:]
DEFAULT_PROCESSES = 8  # compute_metrics_on_folder's default worker processes


def _nnunet() -> tuple[Any, Any]:
    try:
        from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    except ImportError:
        raise UsageError("uqbench bench evaluate compares against nnU-Net: pip install 'uqbench[bench]'") from None
    return compute_metrics_on_folder, SimpleITKIO


def write_fold(data: Path, fold: int, work: Path, *, seed: int) -> list[str]:
    """The fold's references and predictions (the references with synthetic errors) as nnU-Net writes them,
    ``work/ref/<case>.nii.gz`` and ``work/pred/<case>.nii.gz`` with nnU-Net's case names; the case names back."""
    _, io_class = _nnunet()
    io = io_class()
    rng = np.random.default_rng(seed)
    fold_of = acdc_folds()
    (work / "ref").mkdir(parents=True)
    (work / "pred").mkdir()
    names = []
    for pdir in layout.patient_dirs(data):
        if fold_of.get(pdir.name) != fold:
            continue
        for gt in sorted(pdir.glob(f"{pdir.name}_frame??_gt.nii.gz")):
            case = gt.name.removesuffix("_gt.nii.gz")
            seg, props = io.read_seg(str(gt))
            ref = np.asarray(seg[0], dtype=np.uint8)
            io.write_seg(ref, str(work / "ref" / f"{case}.nii.gz"), props)
            io.write_seg(_errors(rng, ref), str(work / "pred" / f"{case}.nii.gz"), props)
            names.append(case)
    if not names:
        raise UsageError(f"--data {data}: no patient of fold {fold}")
    return names


def compare(data: Path, *, fold: int = 0, seed: int = 0) -> dict[str, Any]:
    """Both evaluators on one fold's files: their times, the ratio, and the largest Dice difference."""
    compute_metrics_on_folder, io_class = _nnunet()
    with tempfile.TemporaryDirectory(prefix="uqbench-bench-evaluate-") as tmp:
        work = Path(tmp)
        names = write_fold(data, fold, work, seed=seed)

        def ours(out: Path) -> None:
            evaluate.evaluate(evaluate.Request(
                name="bench", predictions=work / "pred", data=data, dataset="acdc", folds=(fold,), probabilities=None,
                uncertainty_maps=None, uncertainty=None, detector=None, protocol=presets.preset("uqbench"),
                profile=Profile.QUICK, device="cpu", seed=0, out=out))

        ours(work / "warm-up")  # prepares the data (once per machine) and imports what scoring uses
        t0 = time.perf_counter()
        ours(work / "uqbench")
        ours_s = time.perf_counter() - t0
        theirs: dict[int, float] = {}
        for processes in sorted({DEFAULT_PROCESSES, os.cpu_count() or 1}):  # its default, and one per core
            t0 = time.perf_counter()
            compute_metrics_on_folder(str(work / "ref"), str(work / "pred"), str(work / "nnunet.json"), io_class(),
                                      ".nii.gz", list(LABELS), num_processes=processes)
            theirs[processes] = time.perf_counter() - t0
        differences, compared = _dice_differences(work / "nnunet.json", work / "uqbench" / "cases.csv")
    fastest = min(theirs.values())
    return {"volumes": len(names), "uqbench_s": ours_s, "nnunet_s": theirs, "ratio": ours_s / fastest,
            "max_dice_difference": max(differences, default=math.nan), "dice_compared": compared}


def _dice_differences(nnunet_json: Path, cases_csv: Path) -> tuple[list[float], int]:
    """|our Dice - nnU-Net's| per case and class where both are defined, and how many were compared."""
    import pandas as pd

    from uqbench.api import CLASS_NAMES
    from uqbench.data.naming import phases

    theirs = json.loads(nnunet_json.read_text())["metric_per_case"]
    stems = [Path(c["prediction_file"]).name.removesuffix(".nii.gz") for c in theirs]
    resolved, problems = phases(stems, str(nnunet_json))
    if problems:
        raise UsageError(problems[0])
    ours = pd.read_csv(cases_csv).set_index(["patient", "phase", "class"])["dice"]
    differences = []
    for case, stem in zip(theirs, stems, strict=True):
        patient, phase = resolved[stem].patient, resolved[stem].phase
        for label in LABELS:
            a, b = float(ours[(patient, phase, CLASS_NAMES[label])]), float(case["metrics"][str(label)]["Dice"])
            if math.isfinite(a) and math.isfinite(b):
                differences.append(abs(a - b))
    return differences, len(differences)
