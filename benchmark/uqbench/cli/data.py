"""`uqbench data check` and `uqbench data phantom`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from uqbench.cli.app import console, data_app
from uqbench.data.phantom import write_phantom
from uqbench.errors import UsageError
from uqbench.registry import registry


@data_app.command("check")
def check_cmd(
    path: Annotated[Path, typer.Argument(help="Dataset folder (for acdc: patientNNN/...; for nnunet: "
                                                 "DatasetNNN_Name/ with dataset.json).")],
    dataset: Annotated[str, typer.Option("--dataset", help="Reader (see `uqbench plugins`).")] = "acdc",
) -> None:
    """Validate a dataset folder: one line per problem naming the file; exit 2 unless clean."""
    ds = registry().create("dataset", dataset, path)
    found = ds.problems()
    for line in found:
        console.print(f"[red]problem[/red] {escape(line)}", highlight=False, soft_wrap=True)
    if found:
        console.print(f"{path}: {len(found)} problems", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    patients: set[str] = set()
    volumes = 0
    for case in ds.cases():  # read once more, one case at a time, to count what the reader gives
        patients.add(case.patient)
        volumes += 1
    console.print(f"{path}: {len(patients)} patients, {volumes} volumes, 0 problems", markup=False,
                  highlight=False, soft_wrap=True)


@data_app.command("phantom")
def phantom_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the ACDC-layout phantom into.")],
    patients: Annotated[int, typer.Option("--patients", help="How many patients (1-100).")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Write a synthetic cardiac cine-MRI dataset in the ACDC layout."""
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out}: exists and is not empty")
    try:
        ids = write_phantom(out, patients, seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    console.print(f"wrote {len(ids)} patients ({2 * len(ids)} volumes) to {out}", markup=False)
