"""`uqbench evaluate`: score segmentations made elsewhere with the run's protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from uqbench.cli import options
from uqbench.cli.app import app, console
from uqbench.cli.run import bars, headline, held_out_line, protocol_line, summary_table
from uqbench.config import resolve_protocol
from uqbench.data.folds import parse_folds
from uqbench.devices import resolve_device, resolve_profile
from uqbench.errors import UsageError
from uqbench.scoring import folder as evaluate


@app.command("evaluate")
def evaluate_cmd(
    *,
    predictions: Annotated[Path, typer.Option(
        "--predictions", help="Folder of label maps (NIfTI, values 0..3) in each case's original geometry, named "
                              "patientNNN_frameFF (nnU-Net's ACDC names) or patientNNN_ED / _ES; one per case of "
                              "--data.")],
    data: Annotated[Path, typer.Option("--data", help="The reference dataset folder (read by --dataset).")],
    name: Annotated[str, typer.Option(
        "--name", help="The method that made the predictions, as `uqbench submit` puts it on a board.")
    ] = "external",
    dataset: options.Dataset = "acdc",
    folds: Annotated[str | None, typer.Option(
        "--folds", help="Comma list of folds whose cases are scored (default: every case of --data); "
                  "test patients (no fold) are always scored, apart.")] = None,
    probabilities: Annotated[Path | None, typer.Option(
        "--probabilities", help="Folder of class probabilities: nnU-Net's --save_probabilities <case>.npz (key "
                                "'probabilities', classes first) or 4-D NIfTI (classes last); adds calibration.")
    ] = None,
    uncertainty_maps: Annotated[Path | None, typer.Option(
        "--uncertainty-maps", help="Folder of uncertainty maps (NIfTI in [0, 1]); adds risk-coverage and lets a "
                                   "detector run.")] = None,
    uncertainty: Annotated[str | None, typer.Option(
        "--uncertainty", "-u", help="Compute the map from --probabilities with this registered map of the mean "
                                    "softmax (e.g. emap, maxprob) instead of reading --uncertainty-maps.")] = None,
    detector: Annotated[str | None, typer.Option(
        "--detector", help="oracle (flags exactly the patches holding failures: the ceiling of simulated "
                           "correction), or a registered detector fitted out of fold (needs a map and 2+ folds); "
                           "default: none.")] = None,
    protocol: options.Protocol = "uqbench",
    failure_preset: options.FailurePreset = None,
    correction: options.Correction = None,
    detector_training: options.DetectorTraining = None,
    profile: options.Profile = None,
    device: options.Device = "auto",
    seed: options.Seed = 0,
    out: Annotated[Path, typer.Option("--out", help="Output folder (config.json, cases.csv, slices.csv, "
                                                    "positions.csv, detection.csv, summary.json).")
                   ] = Path("runs/evaluate"),
) -> None:
    """Score label maps made elsewhere (nnU-Net's, or a run's OUT/nifti/predictions) with the run's protocol."""
    chosen = resolve_protocol(protocol, failure_preset=failure_preset, correction=correction,
                              detector_training=detector_training)
    try:
        fold_list = None if folds is None else tuple(parse_folds(folds))
    except ValueError as exc:
        raise UsageError(f"--folds {folds!r}: {exc}") from exc
    dev = resolve_device(device)
    req = evaluate.Request(name=name, predictions=predictions, data=data, dataset=dataset, folds=fold_list,
                           probabilities=probabilities, uncertainty_maps=uncertainty_maps, uncertainty=uncertainty,
                           detector=None if detector in (None, "none") else detector,
                           protocol=chosen,
                           profile=resolve_profile(profile, dev), device=dev, seed=seed, out=out)
    evaluate.check(req)
    with bars() as progress:
        summary = evaluate.evaluate(req, progress)
    console.print(summary_table(summary))
    console.print(protocol_line(summary), markup=False, highlight=False)
    if summary.test is not None:
        console.print(held_out_line(summary.test), markup=False, highlight=False)
    for note in summary.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    console.print(f"wrote {out}/config.json, cases.csv, slices.csv, positions.csv, summary.json"
                  + (", detection.csv" if summary.detection else ""), markup=False, highlight=False)
    console.print(headline(summary), markup=False, highlight=False)
