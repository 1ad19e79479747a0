"""The typer application and its shared option types; commands live in sibling modules."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(help="Cardiac MRI segmentation, uncertainty and local failure detection, scored on one protocol.",
                  no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  add_completion=False)
data_app = typer.Typer(help="Check and generate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(help="Benchmarks: speed measured side by side in one process.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
console = Console()
