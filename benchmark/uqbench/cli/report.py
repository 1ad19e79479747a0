"""`uqbench report`: the paper's figures and a report.md for one or more finished runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from uqbench.cli.app import app, console
from uqbench.errors import UsageError


@app.command("report")
def report_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Finished run folders; several overlay their curves.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for the PNG figures and report.md (default: RUN/report; required for several runs).")
    ] = None,
    examples: Annotated[bool, typer.Option(
        "--examples/--no-examples", help="Draw example slices of the worst and median volumes (read from the "
                                         "stage store and the run's data).")] = True,
) -> None:
    """Reliability, risk-coverage, FROC and precision-recall, correction effort, Dice/HD box plots and example
    slices as PNG (needs pip install 'uqbench\\[report]'), with a report.md that shows them."""
    from uqbench.report import build

    if out is None:
        if len(runs) > 1:
            raise UsageError("--out: name a folder for a report over several runs")
        out = runs[0] / "report"
    written = build(runs, out, examples=examples)
    for note in written.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"wrote {len(written.files)} files to {out} (open {out / 'report.md'})", markup=False, soft_wrap=True,
                  highlight=False)
