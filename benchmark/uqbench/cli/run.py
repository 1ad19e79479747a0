"""`uqbench run`: train, predict and score one method on every requested fold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
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

from uqbench import pipeline
from uqbench.api import CLASS_NAMES, PHASES
from uqbench.cli.app import app, console
from uqbench.data.folds import parse_folds
from uqbench.errors import UsageError


@app.command("run")
def run_cmd(
    segmenter: Annotated[str, typer.Option("--segmenter", "-s", help="Segmenter (see `uqbench plugins`).")] = "drn",
    uncertainty: Annotated[str, typer.Option("--uncertainty", "-u", help="Uncertainty map.")] = "bmap",
    detector: Annotated[str | None, typer.Option(
        "--detector", help="Failure detector, fitted out of fold (needs 2+ folds); 'none' to skip.")] = "sresnet",
    loss: Annotated[str | None, typer.Option("--loss", help="Loss (default: the segmenter's recipe).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset folder; default: the built-in phantom.")] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="Reader for --data.")] = "acdc",
    folds: Annotated[str, typer.Option("--folds", help="Comma list of test folds.")] = "0,1,2,3",
    profile: Annotated[str | None, typer.Option(
        "--profile", help="quick (CPU) or paper; default: paper with CUDA, else quick.")] = None,
    samples: Annotated[int | None, typer.Option("--samples", help="MC samples T (default: the map's).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(
        "--precision", help="auto (bf16 autocast where the device computes bf16 natively, else fp32), fp32 or bf16.")]
    = "auto",
    iterations: Annotated[int | None, typer.Option(
        "--iterations", help="Override the recipe's training steps (smoke tests); recorded in config.json.")] = None,
    failure_preset: Annotated[str, typer.Option(
        "--failure-preset", help="Failure definition: paper (section V-B) or seed-code (the authors' code).")]
    = "paper",
    correction: Annotated[str, typer.Option(
        "--correction", help="Simulated correction: patch (whole flagged patches) or failures-only.")] = "patch",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: runs/<method>-<data>-<profile>).")]
    = None,
) -> None:
    """Train, predict and score one method on every fold; writes config.json, cases.csv and summary.json."""
    try:
        fold_list = parse_folds(folds)
    except ValueError as exc:
        raise UsageError(f"--folds {folds!r}: {exc}") from exc
    cfg = pipeline.resolve(segmenter, uncertainty, None if detector in (None, "none") else detector, loss, data,
                           dataset, fold_list, profile, samples, device, seed, out, iterations,
                           failure_preset, correction, precision)
    console.print(f"run → {cfg.out}  (profile {cfg.profile}, device {cfg.device}, {cfg.precision}, T={cfg.samples})",
                  highlight=False)
    with Progress(SpinnerColumn(), TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console) as progress:
        summary = pipeline.run(cfg, progress)
    console.print(summary_table(summary))
    console.print(protocol_line(summary), highlight=False)
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"wrote {cfg.out}/config.json, cases.csv, summary.json", highlight=False)


def summary_table(summary: dict) -> Table:
    """Mean ± sd Dice and HD per phase and class, before and (when scored) after simulated correction."""
    corrected = summary.get("dice_corrected")
    table = Table(title=f"Dice and Hausdorff distance ({summary['cases']} volumes, profile {summary['profile']})")
    table.add_column("phase")
    table.add_column("class")
    table.add_column("Dice")
    table.add_column("HD mm")
    if corrected:
        table.add_column("Dice, corrected")
        table.add_column("HD mm, corrected")
    for phase in PHASES:
        for cls in CLASS_NAMES[1:]:
            s = summary["dice"].get(phase, {}).get(cls)
            if s is None:
                continue
            h = summary["hd"][phase][cls]
            row = [phase, cls, f"{s['mean']:.3f} ± {s['sd']:.3f}", f"{h['mean']:.1f} ± {h['sd']:.1f}"]
            if corrected:
                c = corrected.get(phase, {}).get(cls)
                hc = summary["hd_corrected"].get(phase, {}).get(cls)
                row.append(f"{c['mean']:.3f} ± {c['sd']:.3f}" if c else "-")
                row.append(f"{hc['mean']:.1f} ± {hc['sd']:.1f}" if hc else "-")
            table.add_row(*row)
    return table


def protocol_line(summary: dict) -> str:
    """One line of the run's uncertainty and detection measures (all of them are in summary.json)."""
    rule = summary["failure_rule"]
    parts = [f"failure rule {rule['name']} ({rule['hash']})",
             f"AURC {summary['risk_coverage']['aurc']:.4f}, e-AURC {summary['risk_coverage']['e_aurc']:.4f}",
             f"ECE {summary['calibration']['pooled']['ece']:.4f}, Brier {summary['calibration']['brier']:.4f}"]
    if "detection_curves" in summary:
        slices = summary["detection_curves"]["slices"]
        effort = summary["correction_effort"]
        parts += [f"slice AP {slices['ap_pooled']:.3f} pooled, {slices['ap_per_patient']:.3f} per patient",
                  f"effort AUC (Dice vs share of slices) {effort['auc_dice_vs_slices']:.3f}"]
    return "; ".join(parts)
