"""`uqbench run`: train, predict and score one method on every requested fold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from uqbench import config
from uqbench import run as runs
from uqbench.api import CLASS_NAMES, PHASES
from uqbench.cli import options
from uqbench.cli.app import app, console
from uqbench.data.cache import cache_root
from uqbench.data.folds import parse_folds
from uqbench.errors import UsageError
from uqbench.registry import registry
from uqbench.results.summary import HeldOut, Summary


@app.command("run")
def run_cmd(
    *,
    segmenter: options.Segmenter = "drn",
    uncertainty: options.Uncertainty = "bmap",
    sampler: options.Sampler = "mc-dropout",
    detector: Annotated[str | None, typer.Option(
        "--detector", help="Failure detector (name or name:arg, e.g. sresnet:500), trained as the protocol says "
                           "(out of fold needs 2+ folds; in-sample works with one); 'none' to skip.")] = "sresnet",
    loss: options.Loss = None,
    data: options.Data = None,
    dataset: options.Dataset = "acdc",
    folds: options.Folds = "0,1,2,3",
    test_data: options.TestData = None,
    profile: options.Profile = None,
    samples: Annotated[int | None, typer.Option(
        "--samples", help="Samples T an MC map reads (default: the map's); 1 with an MC map under mc-dropout is "
                          "one stochastic pass.")] = None,
    device: options.Device = "auto",
    precision: options.Precision = "auto",
    iterations: options.Iterations = None,
    protocol: options.Protocol = "uqbench",
    failure_preset: options.FailurePreset = None,
    correction: options.Correction = None,
    detector_training: options.DetectorTraining = None,
    seed: options.Seed = 0,
    force: Annotated[str | None, typer.Option(
        "--force", help=f"Recompute this stage and every later one even when the stage store holds them: "
                        f"{', '.join(runs.STAGES)} (in that order).")] = None,
    out: Annotated[str | None, typer.Option(
        "--out", help="Output folder (default: runs/<segmenter>-<sampler>-<uncertainty>-<data folder name or "
                      "phantom>-<profile>, ':' and '/' as '_', e.g. runs/drn-mc-dropout-bmap-phantom-quick).")] = None,
) -> None:
    """Train, predict and score one method on every fold; writes config.json, cases.csv and summary.json."""
    try:
        fold_list = parse_folds(folds)
    except ValueError as exc:
        raise UsageError(f"--folds {folds!r}: {exc}") from exc
    if force is not None and force not in runs.STAGES:
        raise UsageError(f"--force {force!r}: expected one of {', '.join(runs.STAGES)}")
    if out is not None and not out.strip():
        raise UsageError("--out '': name a folder (an empty name would mean the current one)")
    cfg = config.resolve(segmenter=segmenter, uncertainty=uncertainty,
                         detector=None if detector in (None, "none") else detector, loss=loss, data=data,
                         dataset=dataset, folds=fold_list, profile=profile, samples=samples, device=device, seed=seed,
                         out=None if out is None else Path(out), iterations=iterations,
                         protocol=protocol, failure_preset=failure_preset, correction=correction, precision=precision,
                         detector_training=detector_training, test_data=test_data, sampler=sampler)
    for warning in registry().warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    console.print(f"run → {cfg.out}  (profile {cfg.profile.value}, device {cfg.device}, {cfg.precision}, "
                  f"{cfg.sampler} T={cfg.samples}, protocol {cfg.protocol.label} {cfg.protocol.digest()})",
                  markup=False, highlight=False)
    with bars() as progress:
        summary = runs.run(cfg, progress, force=force)
    console.print(summary_table(summary))
    console.print(protocol_line(summary), markup=False, highlight=False)
    if summary.test is not None:
        console.print(held_out_line(summary.test), markup=False, highlight=False)
    for note in summary.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    stored = sum(r.from_store for r in summary.stages)
    console.print(f"stages: {len(summary.stages) - stored} computed, {stored} from the store "
                  f"({cache_root() / 'stages'}); wrote {cfg.out}/config.json, cases.csv, slices.csv, "
                  "positions.csv, summary.json, stages.json",
                  markup=False, highlight=False)
    console.print(headline(summary), markup=False, highlight=False)


def bars() -> Progress:
    """The progress bars of a command that makes users wait: each with its elapsed time and ETA."""
    return Progress(SpinnerColumn(), TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)


def headline(summary: Summary) -> str:
    """The last line: the figures a board ranks by, the mean foreground Dice and, when a detector ran, AUCC@B beside
    its random and oracle orders (and the corrected Dice at the operating point, which is shown, not ranked)."""
    seg, fixed = summary.segmentation, summary.corrected
    line = f"mean foreground Dice {seg.mean_foreground_dice:.3f} ({seg.volumes} volumes)"
    if fixed is None:
        return line
    aucc, random, oracle = np.mean([(v.aucc, v.aucc_random, v.aucc_oracle) for v in summary.per_volume
                                    if v.aucc is not None], axis=0)
    return (f"{line}; AUCC@{summary.protocol.budget} {aucc:.3f} (random order {random:.3f}, oracle {oracle:.3f}), "
            f"what a board ranks detection by; corrected at the operating point {fixed.mean_foreground_dice:.3f}")


def summary_table(summary: Summary) -> Table:
    """Mean ± sd Dice and HD per phase and class, before and (when scored) after simulated correction."""
    seg, fixed = summary.segmentation, summary.corrected
    table = Table(title=f"Dice and Hausdorff distance ({seg.volumes} volumes, profile {summary.profile}, "
                        f"protocol {summary.protocol.label} {summary.protocol.digest()})")
    table.add_column("phase")
    table.add_column("class")
    table.add_column("Dice")
    table.add_column("HD mm")
    if fixed:
        table.add_column("Dice, corrected")
        table.add_column("HD mm, corrected")
    for phase in PHASES:
        for cls in CLASS_NAMES[1:]:
            s = seg.dice.get(phase, {}).get(cls)
            if s is None:
                continue
            h = seg.hd[phase][cls]
            row = [phase, cls, f"{s.mean:.3f} ± {s.sd:.3f}", f"{h.mean:.1f} ± {h.sd:.1f}"]
            if fixed:
                c = fixed.dice.get(phase, {}).get(cls)
                hc = fixed.hd.get(phase, {}).get(cls)
                row.append(f"{c.mean:.3f} ± {c.sd:.3f}" if c else "-")
                row.append(f"{hc.mean:.1f} ± {hc.sd:.1f}" if hc else "-")
            table.add_row(*row)
    return table


def held_out_line(t: HeldOut) -> str:
    """One line of a held-out test set's results (the rest are in summary.json's ``test`` and OUT/test/)."""
    return (f"held-out test set ({t.dataset.root}, {t.segmentation.volumes} volumes): mean foreground Dice "
            f"{t.segmentation.mean_foreground_dice:.3f}"
            + (f", after simulated correction {t.corrected.mean_foreground_dice:.3f}" if t.corrected else "")
            + "; tables in OUT/test/")


def protocol_line(summary: Summary) -> str:
    """One line of the run's uncertainty and detection measures (all of them are in summary.json)."""
    p, rc, cal = summary.protocol, summary.risk_coverage, summary.calibration
    parts = [f"protocol {p.label} ({p.digest()}; failure rule {p.failure_rule.name})"]
    if rc is not None:
        parts.append(f"AURC {rc.aurc:.4f}, e-AURC {rc.e_aurc:.4f}" if rc.measure == "error-rate" else
                     f"AURC {rc.aurc:.1f}, e-AURC {rc.e_aurc:.1f} (error count, voxels)")
    if cal is not None:
        parts.append(f"ECE {cal.pooled.ece:.4f}, Brier {cal.brier:.4f}")
    if summary.detection_curves and summary.correction_effort:
        slices = summary.detection_curves.slices
        parts += [f"slice AP {slices.ap:.3f} ({slices.ap_convention}), {slices.ap_pooled:.3f} pooled",
                  f"slices with a failure {100 * slices.share_of_slices_with_failures_per_volume:.1f} % "
                  "(mean per volume)",
                  f"effort AUC (Dice vs share of slices) {summary.correction_effort.auc_dice_vs_slices:.3f}"]
    return "; ".join(parts)
