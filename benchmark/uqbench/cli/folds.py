"""`uqbench folds`: the committed 4-fold pathology-stratified ACDC split, as a table, as JSON, or as nnU-Net's
``splits_final.json`` so that an nnU-Net trained with it is scored fold for fold against uqbench methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from uqbench.api import GROUPS
from uqbench.cli.app import app, console
from uqbench.data import layout
from uqbench.data.folds import NUM_FOLDS, acdc_folds, acdc_groups
from uqbench.data.naming import phases
from uqbench.errors import DataError, UsageError

FORMATS = ("table", "json", "nnunet")


@app.command("folds")
def folds_cmd(
    fmt: Annotated[str, typer.Option("--format", help="table; json (patient -> fold); nnunet (nnU-Net's "
                                     "splits_final.json: per fold the train and val case ids of --data).")] = "table",
    data: Annotated[Path | None, typer.Option("--data", help="For --format nnunet: the nnU-Net raw dataset folder "
                                              "(its labelsTr names the cases) or an ACDC-layout folder.")] = None,
) -> None:
    """Print the 4-fold cross-validation split every run uses (25 patients per fold, 5 per group)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if (data is None) != (fmt != "nnunet"):
        raise UsageError("--data goes with --format nnunet (and it needs it: nnU-Net's case ids name each frame)")
    folds, groups = acdc_folds(), acdc_groups()
    if fmt == "nnunet":
        assert data is not None
        print(json.dumps(nnunet_splits(case_ids(data), folds), indent=1))
    elif fmt == "json":
        print(json.dumps(folds, indent=1))
    else:
        table = Table(title="ACDC 4-fold split (test patients per fold)")
        table.add_column("fold")
        for g in GROUPS:
            table.add_column(g)
        for k in range(NUM_FOLDS):
            table.add_row(str(k), *[" ".join(p[7:] for p in sorted(folds) if folds[p] == k and groups[p] == g)
                                    for g in GROUPS])
        console.print(table)


def case_ids(data: Path) -> list[str]:
    """nnU-Net's case ids of a dataset: the label files' stems in an nnU-Net raw folder (``labelsTr``), or the
    ``patientNNN_frameFF`` of every ED and ES frame an ACDC-layout folder's Info.cfg names."""
    labels = data / "labelsTr"
    if labels.is_dir():
        stems = [f.name.removesuffix(".gz").removesuffix(".nii") for f in labels.iterdir()
                 if f.name.endswith((".nii.gz", ".nii"))]
        named, problems = phases(stems, str(labels))
        if problems:
            raise DataError(problems[0])
        return sorted(named)
    return sorted(layout.frame_paths(pdir, frame)[0].name.removesuffix(".nii.gz")
                  for pdir in layout.patient_dirs(data) for frame in layout.read_info(pdir).frames.values())


def nnunet_splits(ids: list[str], folds: dict[str, int]) -> list[dict[str, list[str]]]:
    """splits_final.json: for each fold k, ``val`` the cases of fold k's patients and ``train`` all others."""
    unknown = sorted({i.split("_")[0] for i in ids} - set(folds))
    if unknown:
        raise DataError(f"{unknown[0]}: not an ACDC training patient id (no fold in the committed split)")
    return [{"train": [i for i in ids if folds[i.split("_")[0]] != k],
             "val": [i for i in ids if folds[i.split("_")[0]] == k]} for k in range(NUM_FOLDS)]
