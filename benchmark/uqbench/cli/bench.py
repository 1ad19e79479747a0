"""`uqbench bench metrics|evaluate|train|infer|sweep|budget`: speed of the protocol code, of scoring against
nnU-Net, of training, of MC inference and of a sweep's sharing of stages, measured side by side in one process;
and the correction-budget curves of finished runs, to choose B."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from uqbench.cli import options
from uqbench.cli.app import bench_app, console
from uqbench.devices import Precision, cpu_model, native_bf16, resolve_device, resolve_precision, resolve_profile
from uqbench.errors import DataError, UsageError
from uqbench.kinds import SAMPLER, SEGMENTER, UNCERTAINTY


@bench_app.command("metrics")
def metrics_cmd(
    *,
    volumes: Annotated[int, typer.Option("--volumes", help="Synthetic volumes to time each implementation on.")]
    = 20,
    data: Annotated[Path | None, typer.Option(
        "--data", help="ACDC folder: also time scoring every reference volume against a perturbed copy.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic errors.")] = 0,
) -> None:
    """Time our scoring against MedPy and MONAI (when installed: pip install 'uqbench\\[bench]') and our failure
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
    c = bm.budget_curves(pairs)
    table.add_row(f"budget curves (3 orders, B={c['budget']})", f"{1e3 * c['ours_s']:.1f}", "re-score each b",
                  f"{1e3 * c['loop_s']:.1f}", f"{c['ratio']:.1f}x", f"max |D(b) diff| {c['max_diff']:.1e}")
    console.print(table)
    console.print("full scoring = largest component, Dice, HD, HD95 (pooled and directed-max), ASSD, 3 classes; "
                  f"budget curves: every patch of the three orders, {200 * c['ours_s']:.1f} s for 200 volumes",
                  highlight=False)
    if data is not None:
        a = bm.score_all(bm.acdc_pairs(data, seed))
        console.print(f"scored all {a['volumes']} volumes of {data} (original geometry, reading excluded) "
                      f"in {a['total_s']:.2f} s", highlight=False)


@bench_app.command("budget")
def budget_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Finished run folders (their stages still in the store).")],
    *,
    at: Annotated[str, typer.Option("--at", help="Budgets b to show, a comma list.")] = "0,1,2,5,10,20,50,100,200",
) -> None:
    """Mean Dice after correcting the first b patches of each volume in the oracle, random and each run's detector
    order, far past the preset's B (read from the stage store, nothing recomputed): the oracle's curve should
    still be rising at B."""
    from uqbench import config
    from uqbench.bench.budget import curves
    from uqbench.run import stored_volumes

    try:
        shown = sorted({int(b) for b in at.split(",")})
    except ValueError:
        raise UsageError(f"--at {at!r}: expected a comma list of whole numbers") from None
    if not shown or shown[0] < 0:
        raise UsageError(f"--at {at!r}: expected budgets of 0 or more")
    table = Table(title="uqbench bench budget: mean D(b) over volumes (RV, MYO, LV)")
    table.add_column("b")
    columns: list[tuple[str, list[float]]] = []
    for i, run in enumerate(runs):
        cfg = config.read_folder(run / "config.json")
        if not isinstance(cfg, config.RunConfig):
            raise UsageError(f"{run}: an evaluation folder; bench budget reads runs")
        volumes, _ = stored_volumes(cfg)
        made = curves(volumes, protocol=cfg.protocol, target=cfg.preprocess.spacing, up_to=shown[-1])
        if i == 0:
            columns += [("oracle", [float(made.oracle[b]) for b in shown]),
                        ("random", [float(made.random[b]) for b in shown])]
            console.print(f"{made.volumes} volumes, {made.patches_per_volume:.0f} patches per volume; preset "
                          f"{cfg.protocol.label} B = {cfg.protocol.budget}; oracle and random of {run}",
                          markup=False, highlight=False)
        if made.detector is not None:
            columns.append((f"{cfg.detector} on {cfg.uncertainty} ({run.name})",
                            [float(made.detector[b]) for b in shown]))
    for name, _ in columns:
        table.add_column(escape(name))
    for row, b in enumerate(shown):
        table.add_row(str(b), *[f"{values[row]:.4f}" for _, values in columns])
    console.print(table)


@bench_app.command("evaluate")
def evaluate_cmd(
    *,
    data: Annotated[Path, typer.Option("--data", help="An ACDC-layout folder (its references get synthetic errors).")],
    fold: Annotated[int, typer.Option("--fold", help="The fold whose volumes are scored.")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic errors.")] = 0,
) -> None:
    """Time `uqbench evaluate` against nnU-Net's compute_metrics_on_folder on the same files written by nnU-Net's
    SimpleITKIO (one fold's references with synthetic errors), and compare every Dice (needs pip install
    'uqbench\\[bench]')."""
    from uqbench.bench.evaluate import compare

    if not data.is_dir():
        raise UsageError(f"--data {data}: not a folder")
    if fold not in range(4):
        raise UsageError(f"--fold {fold}: expected 0, 1, 2 or 3")
    r = compare(data, fold=fold, seed=seed)
    table = Table(title=f"uqbench bench evaluate: fold {fold} of {data}, {r['volumes']} volumes, one machine")
    for col in ("uqbench evaluate s", "nnU-Net s (worker processes)", "ratio to the faster", "Dice compared",
                "max |Dice difference|"):
        table.add_column(col)
    nnunet = ", ".join(f"{s:.2f} ({n})" for n, s in r["nnunet_s"].items())
    table.add_row(f"{r['uqbench_s']:.2f}", nnunet, f"{r['ratio']:.2f}x", str(r["dice_compared"]),
                  f"{r['max_dice_difference']:.1e}")
    console.print(table)
    console.print("uqbench: Dice, HD, HD95, ASSD, volumes and failure labels, in this process; nnU-Net: Dice, IoU "
                  "and voxel counts; both after their imports, the data prepared beforehand", highlight=False)


@bench_app.command("train")
def train_cmd(
    *,
    segmenter: options.Segmenters = ["drn"],  # noqa: B006  (typer reads the default)
    profile: options.Profile = None,
    iterations: Annotated[int, typer.Option("--iterations", help="Timed training steps.")] = 20,
    device: options.Device = "auto",
    compile_model: Annotated[bool, typer.Option(
        "--compile", help="Also time the step under torch.compile, side by side.")] = False,
    channels_first: Annotated[bool, typer.Option(
        "--channels-first", help="Also time the step with channels-first tensors (the run's are channels-last), "
                                 "side by side.")] = False,
    default_heap: options.DefaultHeap = False,
    lazy_constants: options.LazyConstants = False,
    precision: options.Precision = "auto",
    other_precision: Annotated[bool, typer.Option(
        "--other-precision", help="Also time the step in the precision --precision did not pick (fp32 beside "
                                  "bf16), side by side: which is faster depends on the CPU.")] = False,
) -> None:
    """Training throughput of each segmenter's recipe on ACDC-sized synthetic slices: iterations/s,
    images/s, peak memory, and the time the full recipe would take at that pace."""
    from uqbench.bench.speed import train_speed
    from uqbench.registry import registry

    if iterations < 1:
        raise UsageError(f"--iterations {iterations}: must be at least 1")
    dev = resolve_device(device)
    precisions = [resolve_precision(precision, dev)]
    if other_precision:
        other: Precision = "fp32" if precisions[0] == "bf16" else "bf16"
        if other == "bf16" and dev == "cuda" and not native_bf16(dev):
            raise UsageError("--other-precision: this CUDA device has no bf16 support, so fp32 is all there is to time")
        precisions.append(other)
    prof = resolve_profile(profile, dev)
    for name in segmenter:
        registry().create(SEGMENTER, name)  # a bad name fails before any timing
    heap = _host_label(default_heap, lazy_constants)
    table = Table(title=f"uqbench bench train: profile {prof.value}, device {_device_name(dev)}{heap}")
    for col in ("segmenter", "precision", "compiled", "layout", "batch x patch", "it/s", "images/s", "full recipe",
                "peak memory MiB"):
        table.add_column(col)
    variants = product(segmenter, precisions, (False, True) if compile_model else (False,),
                       (False, True) if channels_first else (False,))
    for name, prec, compiled, first in variants:
        r = train_speed(name, profile=prof, iterations=iterations, device=dev, compile_model=compiled,
                        precision=prec, channels_first=first, default_heap=default_heap,
                        lazy_constants=lazy_constants)
        mem = r.get("peak_gpu_mib", r.get("peak_rss_mib", 0.0))
        table.add_row(Text(name), prec, "yes" if compiled else "no", "channels-first" if first else "channels-last",
                      f"{r['batch_size']} x {r['patch_size']}", f"{r['iterations_per_s']:.2f}",
                      f"{r['images_per_s']:.1f}", f"{r['full_recipe_s'] / 60:.1f} min", f"{mem:.0f}")
    console.print(table)


@bench_app.command("infer")
def infer_cmd(
    *,
    segmenter: options.Segmenter = "drn",
    uncertainty: options.Uncertainty = "bmap",
    sampler: options.Sampler = "mc-dropout",
    samples: Annotated[int | None, typer.Option(
        "--samples", help="Samples T (default: what the sampler draws for the map).")] = None,
    volumes: Annotated[int, typer.Option("--volumes", help="10-slice 224 x 224 volumes to time.")] = 3,
    width: Annotated[float | None, typer.Option(
        "--width", help="Channel multiplier (default: the quick recipe's on CPU, the paper's on CUDA).")] = None,
    device: options.Device = "auto",
    default_heap: options.DefaultHeap = False,
    lazy_constants: options.LazyConstants = False,
    precision: options.Precision = "auto",
) -> None:
    """Inference time per volume of an MC map's samples as the sampler draws them: passes one at a time against
    all in one batch, running moments against stacked samples, fp32 against bf16 autocast (the precision not
    chosen is timed beside), channels-last tensors (the run's) against channels-first, and the run's number of
    inputs per network call against others."""
    from uqbench.bench.speed import infer_speed
    from uqbench.config import resolve_samples
    from uqbench.registry import registry

    if volumes < 1:
        raise UsageError(f"--volumes {volumes}: need at least 1 volume")
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    registry().create(SEGMENTER, segmenter)
    umap = registry().create(UNCERTAINTY, uncertainty)
    if umap.samples < 2:
        raise UsageError(f"--uncertainty {uncertainty}: a one-pass map; timing samples needs an MC map")
    t = resolve_samples(umap, registry().create(SAMPLER, sampler), uncertainty=uncertainty, sampler=sampler,
                        samples=samples)
    if t < 2:
        raise UsageError(f"--samples {samples}: need at least 2 samples to time passes one at a time and batched")
    r = infer_speed(segmenter, uncertainty, samples=t, volumes=volumes, device=dev, width=width, precision=prec,
                    sampler=sampler, default_heap=default_heap, lazy_constants=lazy_constants)
    heap = _host_label(default_heap, lazy_constants)
    table = Table(title=f"uqbench bench infer: {escape(segmenter)} (width {r['width']}), {escape(sampler)}, "
                        f"{escape(uncertainty)}, T={t}, {prec}, device {_device_name(dev)}{heap}, inputs per "
                        f"call {r['inputs_per_call'] or 'all'}")
    table.add_column("variant")
    table.add_column("s/volume")
    table.add_column("relative")
    base = r["seconds_per_volume"]["one sample per pass, running moments"]
    for label, sec in r["seconds_per_volume"].items():
        table.add_row(label, f"{sec:.3f}", f"{sec / base:.2f}")
    console.print(table)
    mem = r.get("peak_gpu_mib", r.get("peak_rss_mib", 0.0))
    console.print(f"200 ACDC volumes at the best pace: {200 * min(r['seconds_per_volume'].values()):.0f} s; "
                  f"peak memory {mem:.0f} MiB", highlight=False)


def _host_label(default_heap: bool, lazy_constants: bool) -> str:
    """The host settings that differ from a run's, for a table's title."""
    return (", glibc's default heap" if default_heap else "") + (", libtorch's constants unmapped"
                                                                 if lazy_constants else "")


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"


@bench_app.command("sweep")
def sweep_cmd(
    *,
    folds: Annotated[str, typer.Option("--folds", help="Comma list of test folds.")] = "0,1,2,3",
    executor: Annotated[str, typer.Option(
        "--executor", help="How the grid runs, a comma list timed one after another: serial (in this process), "
                           "local (parallel processes).")] = "serial",
    max_parallel: Annotated[int | None, typer.Option(
        "--max-parallel", help="local: jobs at once (default: one per GPU, or one per 4 CPU cores).")] = None,
    iterations: Annotated[int | None, typer.Option(
        "--iterations", help="Override the recipe's training steps (a quicker, less meaningful figure).")] = None,
    device: options.Device = "auto",
    precision: options.Precision = "auto",
) -> None:
    """Time the grid drn x {emap, bmap, mi, maxprob} x {threshold, sresnet} (8 cells) on the phantom, quick
    profile, against one plain `uqbench run` (drn, bmap, sresnet), each from an empty stage store."""
    from uqbench import executors, sweep
    from uqbench.bench.sweep import DETECTORS, MAPS, SEGMENTER, sweep_speed
    from uqbench.cli.sweep import _gpus
    from uqbench.data.folds import parse_folds

    kinds = [e.strip() for e in executor.split(",")]
    if not kinds or any(e not in ("serial", "local") for e in kinds) or len(set(kinds)) < len(kinds):
        raise UsageError(f"--executor {executor!r}: expected serial and/or local, each once")
    try:
        fold_list = parse_folds(folds)
    except ValueError as exc:
        raise UsageError(f"--folds {folds!r}: {exc}") from exc
    dev = resolve_device(device)
    shared = sweep.shared_options(folds=fold_list, profile="quick", device=dev, precision=precision,
                                  iterations=iterations)
    makers: dict[str, Callable[[], sweep.Executor]] = {"serial": executors.Serial}
    how = {"serial": "serial"}
    if "local" in kinds:
        local = executors.Local(gpus=_gpus(), max_parallel=max_parallel)
        makers["local"] = lambda: local
        how["local"] = f"local, {local.slots} at once, {local.threads} thread(s) each"
    r = sweep_speed(executors={k: makers[k] for k in kinds}, options=shared,
                    report=lambda line: console.print(line, markup=False, highlight=False))
    table = Table(title=f"uqbench bench sweep: phantom, quick, folds {folds}, {resolve_precision(precision, dev)}, "
                        f"device {_device_name(dev)}")
    for col in ("what", "s", "relative", "drn-bmap-sresnet cell against the run"):
        table.add_column(col)
    table.add_row(f"one run: {SEGMENTER}, bmap, sresnet", f"{r['plain_s']:.0f}", "1.00", "")
    for kind, g in r["grids"].items():
        check = ("FAILED: " + ", ".join(g["failed"]) if g["failed"] else "identical cases.csv" if g["identical"]
                 else f"cases.csv differs: Dice by up to {g['max_dice_diff']:.3f} in a case and class, mean "
                      f"{g['mean_dice'][1]:.3f} against the run's {g['mean_dice'][0]:.3f}")
        table.add_row(f"grid: {SEGMENTER} x {len(MAPS)} maps x {len(DETECTORS)} detectors = {g['cells']} cells "
                      f"({how[kind]})", f"{g['grid_s']:.0f}", f"{g['ratio']:.2f}", check)
    console.print(table)
    if any(not g["failed"] and not g["identical"] for g in r["grids"].values()):
        console.print("a local grid's jobs run on fewer threads than this process, and CPU training depends on "
                      "the thread count", highlight=False)
