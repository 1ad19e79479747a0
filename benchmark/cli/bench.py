"""`uqbench bench metrics`: speed of the protocol code, measured side by side in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from uqbench.cli.app import bench_app, console
from uqbench.errors import DataError, UsageError


@bench_app.command("metrics")
def metrics_cmd(
    volumes: Annotated[int, typer.Option("--volumes", help="Synthetic volumes to time each implementation on.")]
    = 20,
    data: Annotated[Path | None, typer.Option(
        "--data", help="ACDC folder: also time scoring every reference volume against a perturbed copy.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic errors.")] = 0,
) -> None:
    """Time our scoring against MedPy and MONAI (when installed: pip install 'uqbench[bench]') and our failure
    labels against a per-slice loop, on synthetic 10 x 224 x 224 volumes (spacing 10 x 1.4 x 1.4 mm)."""
    from uqbench.bench import metrics as bm
    from uqbench.data import layout

    if volumes < 2:
        raise UsageError(f"--volumes {volumes}: need at least 2 (one is a warm-up)")
    if data is not None:
        if not data.is_dir():
            raise UsageError(f"--data {data}: not a folder")
        found, _, _ = layout.problems(data)
        if found:
            raise DataError(found[0])
    pairs = bm.synthetic(volumes, seed)
    table = Table(title=f"uqbench bench metrics: {volumes} synthetic volumes {bm.SHAPE}, one process")
    for col in ("what", "ours ms/volume", "baseline", "baseline ms/volume", "ratio", "check"):
        table.add_column(col)
    s = bm.scoring(pairs)
    for name in ("medpy", "monai"):
        if s[f"{name}_s"] is None:
            table.add_row("full scoring", f"{1e3 * s['ours_s']:.1f}", name, "not installed", "-", "-")
            continue
        table.add_row("full scoring", f"{1e3 * s['ours_s']:.1f}", name, f"{1e3 * s[f'{name}_s']:.1f}",
                      f"{s[f'{name}_ratio']:.1f}x", f"max |HD diff| {s[f'{name}_max_hd_diff_mm']:.1e} mm")
    for rule_name in ("paper", "seed-code"):
        from uqbench.protocol.failures import preset

        f = bm.failure_labels(pairs, preset(rule_name))
        table.add_row(f"failure labels ({rule_name})", f"{1e3 * f['ours_s']:.1f}", "per-slice loop",
                      f"{1e3 * f['loop_s']:.1f}", f"{f['ratio']:.1f}x", "identical" if f["identical"] else "DIFFER")
    console.print(table)
    console.print("full scoring = largest component, Dice, HD, HD95 (pooled and directed-max), ASSD, 3 classes",
                  highlight=False)
    if data is not None:
        a = bm.score_all(bm.acdc_pairs(data, seed))
        console.print(f"scored all {a['volumes']} volumes of {data} (original geometry, reading excluded) "
                      f"in {a['total_s']:.2f} s", highlight=False)
