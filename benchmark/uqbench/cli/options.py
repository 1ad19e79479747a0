"""Options more than one command takes, declared once so their flags, help and defaults cannot drift apart."""

from __future__ import annotations

from typing import Annotated

import typer

METHOD = "a name from `uqbench plugins`, with arguments as name:arg:... (e.g. smp:unet:resnet34)"
Segmenter = Annotated[str, typer.Option("--segmenter", "-s", help=f"Segmenter: {METHOD}.")]
Segmenters = Annotated[list[str], typer.Option("--segmenter", "-s", help=f"Segmenter(s): {METHOD}; repeatable.")]
Uncertainty = Annotated[str, typer.Option("--uncertainty", "-u", help="Uncertainty map: a name from `uqbench "
                                                                        "plugins` (name:arg:... with arguments).")]
Profile = Annotated[str | None, typer.Option(
    "--profile", help="Training recipe: quick (CPU) or paper (section V-A); default: paper with CUDA, else quick.")]
Device = Annotated[str, typer.Option("--device", help="auto (cuda when available), cpu or cuda.")]
Precision = Annotated[str, typer.Option(
    "--precision", help="auto (bf16 autocast where the device computes bf16 natively, else fp32), fp32 or bf16.")]
