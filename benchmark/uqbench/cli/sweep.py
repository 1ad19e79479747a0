"""`uqbench sweep`: the grid segmenters x uncertainty maps x detectors, trained and predicted once per segmenter
and fold, every cell an ordinary run folder (see uqbench.sweep)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from uqbench import executors, sweep
from uqbench.cli import options
from uqbench.cli.app import app, console
from uqbench.data.folds import parse_folds
from uqbench.devices import resolve_device, resolve_profile
from uqbench.errors import UqbenchError, UsageError
from uqbench.registry import registry
from uqbench.results import summary as summaries


class SweepFailed(UqbenchError):
    """Some jobs of a sweep failed (each was reported with its log); the others finished."""


def _names(flag: str, value: str) -> list[str]:
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        raise UsageError(f"{flag} {value!r}: an empty name in the comma list")
    return names


@app.command("sweep")
def sweep_cmd(
    *,
    segmenter: Annotated[str, typer.Option(
        "--segmenter", "-s", help=f"Segmenters, a comma list: {options.METHOD}.")] = "drn",
    uncertainty: Annotated[str, typer.Option(
        "--uncertainty", "-u", help="Uncertainty maps, a comma list.")] = "emap,bmap,mi,maxprob",
    sampler: Annotated[str, typer.Option(
        "--sampler", help="Samplers, a comma list: mc-dropout, ensemble:M[:mc], tta or a plugin's.")] = "mc-dropout",
    detector: Annotated[str, typer.Option(
        "--detector", help="Failure detectors, a comma list ('none': a cell without detection).")]
    = "threshold,sresnet",
    loss: options.Loss = None,
    data: options.Data = None,
    dataset: options.Dataset = "acdc",
    folds: options.Folds = "0,1,2,3",
    test_data: options.TestData = None,
    profile: options.Profile = None,
    samples: Annotated[int | None, typer.Option(
        "--samples", help="Samples T of the MC maps (default: each map's); a one-pass map keeps its pass, a "
                          "sampler of fixed T (tta, ensemble:M) its own.")]
    = None,
    device: options.Device = "auto",
    precision: options.Precision = "auto",
    iterations: options.Iterations = None,
    protocol: options.Protocol = "uqbench",
    failure_preset: options.FailurePreset = None,
    correction: options.Correction = None,
    detector_training: options.DetectorTraining = None,
    seed: options.Seed = 0,
    executor: Annotated[str, typer.Option(
        "--executor", help="serial (in this process), local (parallel processes, one GPU each where several "
                           "are present) or slurm (submitit: pip install 'uqbench\\[slurm]').")] = "serial",
    max_parallel: Annotated[int | None, typer.Option(
        "--max-parallel", help="Jobs at once (local: default one per GPU, or one per 4 CPU cores; slurm: "
                               "default no limit).")] = None,
    gpus_per_job: Annotated[int, typer.Option(
        "--gpus-per-job", help="GPUs each job gets (local and slurm); 0: CPU jobs.")] = 1,
    slurm_partition: Annotated[str | None, typer.Option(
        "--slurm-partition", help="Slurm partition to submit to (default: the cluster's).")] = None,
    timeout_min: Annotated[int, typer.Option(
        "--timeout-min", help="Slurm time limit of each job, in minutes.")] = 240,
    out: Annotated[str | None, typer.Option(
        "--out", help="Sweep folder: a run folder per cell, logs/, sweep.json (default: "
                      "sweeps/<data folder name or phantom>-<profile>).")] = None,
) -> None:
    """Run the grid segmenters x samplers x maps x detectors: train and predict once per segmenter and fold
    (wave 1), then every cell (wave 2), each an ordinary run folder under --out; a rerun resumes from the stage
    store."""
    if executor not in sweep.EXECUTORS:
        raise UsageError(f"--executor {executor!r}: expected one of {', '.join(sweep.EXECUTORS)}")
    try:
        fold_list = parse_folds(folds)
    except ValueError as exc:
        raise UsageError(f"--folds {folds!r}: {exc}") from exc
    if out is not None and not out.strip():
        raise UsageError("--out '': name a folder (an empty name would mean the current one)")
    shared = sweep.shared_options(folds=fold_list, data=data, profile=profile, samples=samples, device=device,
                                  precision=precision, iterations=iterations, seed=seed, loss=loss, dataset=dataset,
                                  protocol=protocol, failure_preset=failure_preset, correction=correction,
                                  detector_training=detector_training, test_data=test_data)
    segs, maps, samplers = _names("--segmenter", segmenter), _names("--uncertainty", uncertainty), _names(
        "--sampler", sampler)
    dets = [None if d == "none" else d for d in _names("--detector", detector)]
    source = "phantom" if data is None else data.name
    prof = resolve_profile(profile, resolve_device(device))
    root = Path(out) if out is not None else Path("sweeps") / f"{source}-{prof.value}"
    if root.exists() and not root.is_dir():
        raise UsageError(f"--out {root}: is a file, not a folder")
    p = sweep.plan(segmenters=segs, samplers=samplers, uncertainties=maps, detectors=dets, options=shared,
                   out=root.resolve(), check_folders=executor != "slurm")
    for warning in registry().warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    runner: sweep.Executor | None = None
    if executor == "slurm":
        runner = executors.slurm(root.resolve() / "slurm", partition=slurm_partition,
                                             gpus_per_job=gpus_per_job, timeout_min=timeout_min,
                                             max_parallel=max_parallel)
    elif executor == "local":
        runner = executors.Local(gpus=_gpus(), gpus_per_job=gpus_per_job, max_parallel=max_parallel)
    waves = p.waves()
    console.print(f"sweep → {root}: {len(segs)} segmenter(s) x {len(samplers)} sampler(s) x {len(maps)} map(s) x "
                  f"{len(dets)} detector(s) = "
                  f"{len(p.cells)} cells, folds {','.join(map(str, fold_list))}; wave 1: {len(waves[0])} "
                  f"train+predict jobs, wave 2: {len(waves[1])} cells; executor {executor}"
                  + ("" if runner is None else f", {min(runner.slots, len(waves[1]))} at once"),
                  markup=False, highlight=False)

    def report(o: sweep.Outcome) -> None:
        if o.ok:
            console.print(f"[green]done[/green] {escape(o.name)} ({o.wall_s:.0f} s; stages: {o.computed} computed, "
                          f"{o.from_store} from the store)", highlight=False)
        elif o.skipped:
            console.print(f"[yellow]skipped[/yellow] {escape(o.name)}: {escape(o.error or '')}", highlight=False)
        else:
            console.print(f"[red]failed[/red] {escape(o.name)}: {escape(o.error or '')}; log: {escape(o.log or '')}",
                          highlight=False, soft_wrap=True)

    if runner is None:
        with Progress(SpinnerColumn(), TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            outcomes = sweep.run(p, executors.Serial(progress), report=report)
    else:
        outcomes = sweep.run(p, runner, report=report)
    console.print(_cells_table(p, outcomes))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise SweepFailed(f"sweep {root}: {len(failed)} of {len(outcomes)} jobs did not finish (reported above, "
                          f"and in {root / 'sweep.json'}); the others did; run the same command again to resume")
    console.print(f"wrote {len(p.cells)} run folders and sweep.json under {root}", markup=False, highlight=False)


def _gpus() -> list[str]:
    """The GPUs a local sweep shares out: those CUDA_VISIBLE_DEVICES names, or every one torch sees."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()] if torch.cuda.is_available() else []
    return [str(i) for i in range(torch.cuda.device_count())]


def _cells_table(p: sweep.Plan, outcomes: list[sweep.Outcome]) -> Table:
    """Each cell's headline numbers, read back from its run folder's summary.json."""
    done = {o.name: o for o in outcomes}
    table = Table(title=f"sweep {p.out.name}: {len(p.cells)} cells")
    table.add_column("cell", no_wrap=True)
    for col in ("Dice", "corrected", "e-AURC", "slice AP", "voxel sens.", "stored", "s"):
        table.add_column(col)
    for cell in p.cells:
        o = done[cell.name]
        if not o.ok:
            table.add_row(Text(cell.name), "skipped" if o.skipped else "failed", *["-"] * 6)
            continue
        s = summaries.read(Path(cell.out or "") / "summary.json")
        table.add_row(Text(cell.name), f"{s.segmentation.mean_foreground_dice:.3f}",
                      f"{s.corrected.mean_foreground_dice:.3f}" if s.corrected else "-",
                      f"{s.risk_coverage.e_aurc:.4f}" if s.risk_coverage else "-",
                      f"{s.detection_curves.slices.ap:.3f}" if s.detection_curves else "-",
                      f"{s.detection.voxel_sensitivity:.3f}" if s.detection else "-",
                      f"{o.from_store}/{o.computed + o.from_store}", f"{o.wall_s:.0f}")
    return table
