"""`uqbench bench sweep`: a whole grid against one plain run, each from an empty stage store, in one process:
what the store's sharing of training and predictions saves. The phantom is written into each store before its
clock starts (it is not part of either); the data preparation is (each store prepares once)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from uqbench import config, sweep
from uqbench import run as runs
from uqbench.data.prepare import phantom_root

SEGMENTER, MAPS, DETECTORS = "drn", ("emap", "bmap", "mi", "maxprob"), ("threshold", "sresnet")
PLAIN = ("bmap", "sresnet")  # `uqbench run`'s defaults: the grid's cell the plain run is compared with


@contextmanager
def _empty_store(root: Path) -> Iterator[Path]:
    """UQBENCH_CACHE pointed at a new, empty folder (child processes inherit it); the phantom written."""
    old = os.environ.get("UQBENCH_CACHE")
    os.environ["UQBENCH_CACHE"] = str(root)
    try:
        phantom_root()
        yield root
    finally:
        if old is None:
            os.environ.pop("UQBENCH_CACHE", None)
        else:
            os.environ["UQBENCH_CACHE"] = old


def sweep_speed(*, executors: dict[str, Callable[[], sweep.Executor]], options: dict[str, Any],
                report: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Seconds of one plain run (drn, bmap, sresnet) and of the grid drn x MAPS x DETECTORS on each executor,
    each from an empty store, and whether each grid's drn-bmap-sresnet cell scored every case exactly as the
    plain run did."""
    work = Path(tempfile.mkdtemp(prefix="uqbench-bench-sweep-"))
    try:
        with _empty_store(work / "plain-store"):
            cfg = config.resolve(segmenter=SEGMENTER, uncertainty=PLAIN[0], detector=PLAIN[1],
                                 out=work / "plain", **options)
            report("plain run ...")
            t0 = time.perf_counter()
            runs.run(cfg)
            plain_s = time.perf_counter() - t0
        plain = pd.read_csv(work / "plain" / "cases.csv")
        grids = {}
        for name, make in executors.items():
            with _empty_store(work / f"{name}-store"):
                p = sweep.plan(segmenters=[SEGMENTER], uncertainties=MAPS, detectors=DETECTORS, options=options,
                               out=work / name)
                report(f"grid of {len(p.cells)} cells, {name} ...")
                t0 = time.perf_counter()
                outcomes = sweep.run(p, make(), report=lambda o: report(
                    f"  {o.name}: {o.wall_s:.0f} s" + ("" if o.ok else f" FAILED {o.error}")))
                grid_s = time.perf_counter() - t0
            failed = [o.name for o in outcomes if not o.ok]
            cell = work / name / sweep.cell_name(SEGMENTER, "mc-dropout", PLAIN[0], detector=PLAIN[1]) / "cases.csv"
            grids[name] = {"grid_s": grid_s, "ratio": grid_s / plain_s, "cells": len(p.cells), "failed": failed}
            if not failed:
                other = pd.read_csv(cell)
                grids[name] |= {"identical": plain.equals(other),
                                "max_dice_diff": float((plain["dice"] - other["dice"]).abs().max()),
                                "mean_dice": (float(plain["dice"].mean()), float(other["dice"].mean()))}
        return {"plain_s": plain_s, "grids": grids}
    finally:
        shutil.rmtree(work, ignore_errors=True)
