"""The typer application; commands live in sibling modules, the options they share in cli/options.py."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

import uqbench

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  add_completion=False)
data_app = typer.Typer(help="Check and generate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(help="Benchmarks: speed measured side by side in one process.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
console = Console()


def _print_version(value: bool) -> None:
    if value:
        print(f"uqbench {uqbench.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print uqbench's version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Cardiac MRI segmentation, uncertainty and local failure detection, scored on one protocol."""
