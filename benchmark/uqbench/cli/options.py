"""Options more than one command takes, declared once so their flags, help and defaults cannot drift apart."""

from __future__ import annotations

from typing import Annotated

import typer

Segmenter = Annotated[str, typer.Option("--segmenter", "-s", help="Segmenter (see `uqbench plugins`).")]
Segmenters = Annotated[list[str], typer.Option("--segmenter", "-s", help="Segmenter(s) (see `uqbench plugins`); "
                                                                          "repeatable.")]
Uncertainty = Annotated[str, typer.Option("--uncertainty", "-u", help="Uncertainty map (see `uqbench plugins`).")]
Profile = Annotated[str | None, typer.Option(
    "--profile", help="Training recipe: quick (CPU) or paper (section V-A); default: paper with CUDA, else quick.")]
Device = Annotated[str, typer.Option("--device", help="auto (cuda when available), cpu or cuda.")]
Precision = Annotated[str, typer.Option(
    "--precision", help="auto (bf16 autocast where the device computes bf16 natively, else fp32), fp32 or bf16.")]
