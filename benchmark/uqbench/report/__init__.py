"""``uqbench report``: the paper's figures for one or more finished runs, and a report.md that shows them with
the runs' tables. Needs the ``report`` extra (matplotlib); the example slices also need the run's stages in the
stage store and its data (they are read, never recomputed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from uqbench import config as run_config
from uqbench.api import CLASS_NAMES, PHASES
from uqbench.errors import UqbenchError, UsageError
from uqbench.leaderboard.boards import md
from uqbench.results import summary as summaries
from uqbench.results import tables
from uqbench.results.summary import Scores, Summary


@dataclass(frozen=True, slots=True, kw_only=True)
class Written:
    """What a report wrote: its figures and report.md, and why any part was left out."""

    files: list[Path]
    notes: list[str]


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("uqbench report draws with matplotlib: pip install 'uqbench[report]'") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Made:
    """How a folder's results were made, as the report describes them: a run's settings, or an evaluation's."""

    label: str  # segmenter · map · detector
    setting: str  # "folds 0,1,2,3 ..., T=10, loss ce" or "predictions made elsewhere (uqbench evaluate)"
    cfg: run_config.RunConfig | None  # a run's (its stages hold the example slices); None for an evaluation


def _made(folder: Path) -> _Made:
    cfg = run_config.read_folder(folder / "config.json")
    if isinstance(cfg, run_config.EvaluationConfig):
        uncertainty = cfg.uncertainty or ("external map" if cfg.uncertainty_maps else "no map")
        return _Made(label=f"{cfg.name} · {uncertainty} · {cfg.detector or 'none'}",
                     setting="predictions made elsewhere, scored by uqbench evaluate", cfg=None)
    return _Made(label=f"{cfg.segmenter} · {cfg.uncertainty} · {cfg.detector or 'none'}",
                 setting=f"folds {','.join(map(str, cfg.folds))}, T={cfg.samples}, loss {md(cfg.loss)}", cfg=cfg)


def _labels(made: list[_Made], folders: list[Path]) -> list[str]:
    """Segmenter · map · detector per folder, with the folder's name where two would read the same."""
    plain = [m.label for m in made]
    return [f"{p} ({f.name})" if plain.count(p) > 1 else p for p, f in zip(plain, folders, strict=True)]


def _scores_table(seg: Scores, fixed: Scores | None) -> list[str]:
    head = ["phase", "class", "Dice", "HD mm"] + (["Dice corrected", "HD mm corrected"] if fixed else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for phase in PHASES:
        for cls in CLASS_NAMES[1:]:
            d, h = seg.dice[phase][cls], seg.hd[phase][cls]
            row = [phase, cls, f"{d.mean:.3f} ± {d.sd:.3f}", f"{h.mean:.1f} ± {h.sd:.1f}"]
            if fixed:
                dc, hc = fixed.dice[phase][cls], fixed.hd[phase][cls]
                row += [f"{dc.mean:.3f} ± {dc.sd:.3f}", f"{hc.mean:.1f} ± {hc.sd:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def _measures(s: Summary) -> list[str]:
    rc, cal = s.risk_coverage, s.calibration
    out = [f"- mean foreground Dice {s.segmentation.mean_foreground_dice:.3f}"
           + (f", after simulated correction {s.corrected.mean_foreground_dice:.3f}" if s.corrected else "")]
    if rc is not None:
        out.append(f"- risk-coverage ({rc.measure}): AURC {rc.aurc:.4g}, e-AURC {rc.e_aurc:.4g}")
    if cal is not None:
        out.append(f"- calibration: ECE {cal.pooled.ece:.4f} (pooled, {cal.bins} bins), Brier {cal.brier:.4f}")
    if s.detection_curves and s.correction_effort and s.detection:
        sl = s.detection_curves.slices
        out += [f"- slices needing correction: AP {sl.ap:.3f} ({sl.ap_convention}); "
                f"{100 * sl.share_of_slices_with_failures_per_volume:.1f} % of slices hold a failure (mean per volume)",
                f"- at the operating point: voxel sensitivity {s.detection.voxel_sensitivity:.3f}, "
                f"{s.detection.false_positive_patches_per_volume:.1f} false-positive patches per volume",
                f"- correction effort: AUC {s.correction_effort.auc_dice_vs_slices:.3f} (Dice against the share of "
                "slices inspected)"]
    return out


def _chosen(cases: pd.DataFrame) -> list[tuple[str, str, str, float]]:
    """The worst and the median volume by mean foreground Dice (segmentation only): (which, patient, phase, Dice)."""
    per = cases.groupby(["patient", "phase"], sort=True)["dice"].mean().sort_values(kind="stable")
    worst = per.index[0]
    median = per.index[(len(per) - 1) // 2]
    return [("worst", str(worst[0]), str(worst[1]), float(per.iloc[0])),
            ("median", str(median[0]), str(median[1]), float(per.iloc[(len(per) - 1) // 2]))]


def build(folders: list[Path], out: Path, *, examples: bool = True) -> Written:
    """Draw every figure for the runs in ``folders`` into ``out`` and write ``out/report.md``."""
    _require_matplotlib()
    from uqbench.report import figures

    made = [_made(f) for f in folders]
    loaded = []
    for folder in folders:
        summary = summaries.read(folder / "summary.json")
        cases, _ = tables.read_checked(folder, summary)
        loaded.append((summary, cases))
    runs = [figures.Run(label=label, summary=s, cases=c)
            for label, (s, c) in zip(_labels(made, folders), loaded, strict=True)]
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    notes: list[str] = []
    drawn = {"reliability": figures.reliability(runs), "risk_coverage": figures.risk_coverage(runs),
             "detection": figures.detection(runs), "correction_effort": figures.effort(runs)}
    curves = [figures.save(fig, out / f"{name}.png") for name, fig in drawn.items() if fig is not None]
    files += curves
    doc = [f"# Report: {md(', '.join(r.label for r in runs))}", "",
           "Made by `uqbench report` from each run's summary.json and cases.csv"
           + (" and, for the example slices, its stages in the stage store." if examples else "."), ""]
    doc += ["## Curves", ""] + [f"![{p.stem}]({p.name})" for p in curves] + [""]
    for i, (run, how, folder) in enumerate(zip(runs, made, folders, strict=True)):
        s = run.summary
        tag = f"run{i + 1}" if len(runs) > 1 else "run"
        data = "the built-in phantom" if s.dataset.phantom else f"{s.dataset.name} ({s.dataset.fingerprint[:12]})"
        doc += [f"## {md(run.label)}", "",
                f"Folder `{md(folder.name)}`: {data}, {how.setting}, profile {s.profile}, "
                f"protocol {md(s.protocol.label)} ({s.protocol.digest()}), {s.segmentation.volumes} volumes.", "",
                *_scores_table(s.segmentation, s.corrected), "",
                *_measures(s), ""]
        box = figures.save(figures.boxes(run), out / f"{tag}_boxes.png")
        files.append(box)
        doc += [f"![Dice and HD]({box.name})", ""]
        if not examples or how.cfg is None:  # an evaluation's grids are not in the stage store
            continue
        try:
            from uqbench.run import stored_volumes

            volumes, images = stored_volumes(how.cfg)
        except UqbenchError as exc:
            notes.append(f"{folder}: example slices left out: {exc}")
            doc += [f"Example slices left out: {md(str(exc))}", ""]
            continue
        by_case = {(v.patient, v.phase): v for v in volumes}
        for which, patient, phase, dice in _chosen(run.cases):
            v = by_case[(patient, phase)]
            fig = figures.example(v, images[f"{patient}_{phase}"].astype(np.float32), protocol=s.protocol,
                                  title=f"{run.label}: {which} volume, {patient} {phase} (mean foreground Dice "
                                        f"{dice:.3f})")
            path = figures.save(fig, out / f"{tag}_example_{which}.png", dpi=figures.EXAMPLE_DPI)
            files.append(path)
            doc += [f"![{which} volume]({path.name})", ""]
    report = out / "report.md"
    report.write_text("\n".join(doc))
    files.append(report)
    return Written(files=files, notes=notes)
