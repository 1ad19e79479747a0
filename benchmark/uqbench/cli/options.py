"""Options more than one command takes, declared once so their flags, help and defaults cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

METHOD = "a name from `uqbench plugins`, with arguments as name:arg:... (e.g. smp:unet:resnet34)"
Segmenter = Annotated[str, typer.Option("--segmenter", "-s", help=f"Segmenter: {METHOD}.")]
Segmenters = Annotated[list[str], typer.Option("--segmenter", "-s", help=f"Segmenter(s): {METHOD}; repeatable.")]
Uncertainty = Annotated[str, typer.Option("--uncertainty", "-u", help="Uncertainty map: a name from `uqbench "
                                                                        "plugins` (name:arg:... with arguments).")]
Sampler = Annotated[str, typer.Option(
    "--sampler", help="How predictive samples are drawn: mc-dropout (the paper's), ensemble:M (M models trained "
    "per fold; ensemble:M:mc adds MC passes of each), tta (8 flips and quarter turns), or a plugin's.")]
Profile = Annotated[str | None, typer.Option(
    "--profile", help="Training recipe: quick (phantom, smoke tests), cpu (real ACDC on a 2-core CPU, at most 30 "
    "minutes a fold) or paper (section V-A); default: paper with CUDA, else quick.")]
Device = Annotated[str, typer.Option("--device", help="auto (cuda when available), cpu or cuda.")]
Precision = Annotated[str, typer.Option(
    "--precision", help="auto (bf16 autocast where the device computes bf16 faster: CUDA, AMX, AVX512-BF16 "
    "but not Intel's; else fp32), fp32 or bf16.")]
DefaultHeap = Annotated[bool, typer.Option(
    "--default-heap", help="Time with glibc's default heap instead of the run's (1 GiB pad, no block mapped on its "
                           "own; process-wide, so compare with a second run without it).")]
LazyConstants = Annotated[bool, typer.Option(
    "--lazy-constants", help="Time without first mapping libtorch's read-only data, whose unmapped pages slow some "
                             "vector functions (ELU's expm1) on some CPUs; process-wide, so compare with a second run "
                             "without it.")]
Loss = Annotated[str | None, typer.Option("--loss", help="Loss (default: the segmenter's recipe's).")]
Data = Annotated[Path | None, typer.Option("--data", help="Dataset folder; default: the built-in phantom.")]
Dataset = Annotated[str, typer.Option("--dataset", help="Reader for --data.")]
Folds = Annotated[str, typer.Option("--folds", help="Comma list of test folds.")]
TestData = Annotated[Path | None, typer.Option(
    "--test-data", help="A held-out test set (read like --data; no patient of it a training patient): after the "
                        "cross-validation, train on every training patient, predict it, fit the detector on every "
                        "cross-validation prediction and score it apart (OUT/test/).")]
Iterations = Annotated[int | None, typer.Option(
    "--iterations", help="Override the recipe's training steps (smoke tests); recorded in config.json.")]
Protocol = Annotated[str, typer.Option(
    "--protocol", help="Protocol preset (failure rule, correction, detector training, curve and test conventions): "
                       "uqbench (ours), sander2020 (the paper's text) or seed-code (the authors' code); see the "
                       "README.")]
FailurePreset = Annotated[str | None, typer.Option(
    "--failure-preset", help="Override the preset's failure definition: paper (section V-B) or seed-code (the "
                             "authors' code); changes the protocol hash.")]
Correction = Annotated[str | None, typer.Option(
    "--correction", help="Override the preset's simulated correction: patch (whole flagged patches) or "
                         "failures-only; changes the protocol hash.")]
DetectorTraining = Annotated[str | None, typer.Option(
    "--detector-training", help="Override what each fold's detector learns from: out-of-fold (the other folds' "
                                "test predictions) or in-sample (the fold's own training patients); changes the "
                                "protocol hash.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
