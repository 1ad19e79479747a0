"""`uqbench folds`: the committed 4-fold pathology-stratified ACDC split."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from uqbench.api import GROUPS
from uqbench.cli.app import app, console
from uqbench.data.folds import NUM_FOLDS, acdc_folds, acdc_groups


@app.command("folds")
def folds_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print patient -> fold as JSON.")] = False) -> None:
    """Print the 4-fold cross-validation split every run uses (25 patients per fold, 5 per group)."""
    folds, groups = acdc_folds(), acdc_groups()
    if as_json:
        print(json.dumps(folds, indent=1))
        return
    table = Table(title="ACDC 4-fold split (test patients per fold)")
    table.add_column("fold")
    for g in GROUPS:
        table.add_column(g)
    for k in range(NUM_FOLDS):
        table.add_row(str(k), *[" ".join(p[7:] for p in sorted(folds) if folds[p] == k and groups[p] == g)
                                for g in GROUPS])
    console.print(table)
