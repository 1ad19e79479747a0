"""The typer application; commands live in sibling modules, the options they share in cli/options.py."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console, ConsoleDimensions

import uqbench

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  add_completion=False)
data_app = typer.Typer(help="Check and generate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(help="Benchmarks: speed measured side by side in one process.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
LOG_WIDTH = 160  # columns of output written to a file or pipe, where rich would assume 80 and cut tables' cells


class _Console(Console):
    """rich's console, but 160 columns wide, not 80, when no stream is a terminal and COLUMNS is unset: a log."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and "COLUMNS" not in os.environ and not any(
                stream.isatty() for stream in (sys.stdin, sys.stdout, sys.stderr) if stream is not None):
            return ConsoleDimensions(LOG_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self.width, self.height = new_size  # rich's own setters, as its size setter does


console = _Console()


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
