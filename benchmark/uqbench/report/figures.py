"""The paper's figures as PNG files, drawn on matplotlib ``Figure`` objects (rendered by Agg, never a window or
pyplot's global state): curves overlay one line per run, box plots and example slices show one run each.

Every function takes what a run already measured (its summary, cases.csv, its stored volumes) and draws it; none
computes a protocol quantity of its own, except what an example slice shows (which patches are flagged at the
operating point, from the protocol's own rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from uqbench.api import CLASS_NAMES, PHASES
from uqbench.protocol.patches import expand
from uqbench.protocol.presets import Preset
from uqbench.results.summary import Summary
from uqbench.scoring.case import Volume

DPI = 110
EXAMPLE_DPI = 80  # noisy MR images compress badly: a smaller file at a still legible size
LABEL_COLOURS = ["#00000000", "#1f77b4", "#ffbf00", "#d62728"]  # background (clear), RV, MYO, LV
LABELS = ListedColormap(LABEL_COLOURS)
SEGMENTED, CORRECTED = "#9ecae1", "#fdae6b"  # box colours


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One run as a report draws it: a short label, its summary and its case rows."""

    label: str
    summary: Summary
    cases: pd.DataFrame


def save(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG at ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def reliability(runs: Sequence[Run]) -> Figure | None:
    """Reliability diagrams of the mean softmax: pooled over classes (every run) and per class (first run),
    with the ECE in each legend (Fig. 1 of the preliminary paper); None when no run has probabilities."""
    runs = [r for r in runs if r.summary.calibration is not None]
    if not runs:
        return None
    fig = Figure(figsize=(10, 4.6))
    ax, per = fig.subplots(1, 2)
    for r in runs:
        assert r.summary.calibration is not None
        rel = r.summary.calibration.pooled
        conf = [c for c, f in zip(rel.confidence, rel.frequency, strict=True) if c is not None and f is not None]
        freq = [f for c, f in zip(rel.confidence, rel.frequency, strict=True) if c is not None and f is not None]
        ax.plot(conf, freq, marker="o", ms=3, label=f"{r.label} (ECE {rel.ece:.4f})")
    first = runs[0].summary.calibration
    assert first is not None
    for cls, rel in first.per_class.items():
        pts = [(c, f) for c, f in zip(rel.confidence, rel.frequency, strict=True) if c is not None and f is not None]
        per.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"{cls} (ECE {rel.ece:.4f})")
    for a, title in ((ax, "pooled over classes"), (per, f"per class: {runs[0].label}")):
        a.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
        a.set(xlabel="mean predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1),
              title=f"Reliability, {title}")
        a.legend(fontsize=8, loc="upper left")
    return fig


def risk_coverage(runs: Sequence[Run]) -> Figure | None:
    """Risk against coverage when the most uncertain voxels are withheld first, with AURC and e-AURC (Fig. 4);
    None when no run has an uncertainty map."""
    curves = [(r.label, r.summary.risk_coverage) for r in runs if r.summary.risk_coverage is not None]
    if not curves:
        return None
    fig = Figure(figsize=(6, 4.6))
    ax = fig.subplots()
    for label, rc in curves:
        ax.plot(rc.coverage, rc.risk, label=f"{label} (AURC {rc.aurc:.4g}, e-AURC {rc.e_aurc:.4g})")
    measure = curves[0][1].measure
    ax.set(xlabel="coverage (% of voxels kept)", ylabel="risk (error rate)" if measure == "error-rate" else
           "risk (errors, voxels)", title="Risk-coverage of the uncertainty map")
    ax.legend(fontsize=8)
    return fig


def detection(runs: Sequence[Run]) -> Figure | None:
    """Voxel FROC (sensitivity against false-positive patches per volume) and the precision-recall curve of
    slices needing correction, with AP (Fig. 3); None when no run detected."""
    detected = [r for r in runs if r.summary.detection_curves is not None]
    if not detected:
        return None
    fig = Figure(figsize=(11, 4.6))
    froc_ax, pr_ax = fig.subplots(1, 2)
    for r in detected:
        curves = r.summary.detection_curves
        assert curves is not None
        order = np.argsort(curves.froc.false_positives_per_volume, kind="stable")
        froc_ax.plot(np.asarray(curves.froc.false_positives_per_volume)[order],
                     np.asarray(curves.froc.sensitivity)[order], label=r.label)
        pr = curves.slices.pr_curve
        pr_ax.plot(pr.recall, pr.precision, label=f"{r.label} (AP {curves.slices.ap:.3f})")
    froc_ax.set(xlabel="false-positive patches per volume", ylabel="failure voxels detected (sensitivity)",
                ylim=(0, 1.02), title="Voxel FROC")
    froc_ax.set_xscale("symlog", linthresh=1)
    froc_ax.set_xlim(left=0)
    pr_ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
              title="Slices needing correction")
    froc_ax.legend(fontsize=8)
    pr_ax.legend(fontsize=8)
    return fig


def effort(runs: Sequence[Run]) -> Figure | None:
    """Mean Dice after correcting the flagged patches against the share of slices an expert inspects, as the
    threshold falls; None when no run detected."""
    detected = [r for r in runs if r.summary.correction_effort is not None]
    if not detected:
        return None
    fig = Figure(figsize=(6, 4.6))
    ax = fig.subplots()
    for r in detected:
        curve = r.summary.correction_effort
        assert curve is not None
        pts = sorted((p.share_of_slices, p.dice) for p in curve.points)
        ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], marker=".",
                label=f"{r.label} (AUC {curve.auc_dice_vs_slices:.3f})")
    ax.set(xlabel="slices inspected (%)", ylabel="mean Dice after correction", title="Correction effort")
    ax.legend(fontsize=8)
    return fig


def boxes(run: Run) -> Figure:
    """Dice and HD per structure and phase, segmentation-only beside corrected (when a detector ran)."""
    cases = run.cases
    corrected = "dice_corrected" in cases
    fig = Figure(figsize=(12, 4.6))
    axes = fig.subplots(1, 2)
    for ax, metric, unit in ((axes[0], "dice", "Dice"), (axes[1], "hd", "Hausdorff distance (mm)")):
        data: list[np.ndarray] = []
        positions: list[float] = []
        colours: list[str] = []
        ticks: list[float] = []
        names: list[str] = []
        step = 3 if corrected else 2
        for phase in PHASES:
            for cls in CLASS_NAMES[1:]:
                rows = cases[(cases["phase"] == phase) & (cases["class"] == cls)]
                at = step * len(names) + 1
                data.append(rows[metric].dropna().to_numpy())
                positions.append(at)
                colours.append(SEGMENTED)
                if corrected:
                    data.append(rows[f"{metric}_corrected"].dropna().to_numpy())
                    positions.append(at + 1)
                    colours.append(CORRECTED)
                ticks.append(at + (0.5 if corrected else 0))
                names.append(f"{phase}\n{cls}")
        parts = ax.boxplot(data, positions=positions, patch_artist=True, widths=0.8,
                           medianprops={"color": "black"})
        for box, colour in zip(parts["boxes"], colours, strict=True):
            box.set_facecolor(colour)
        ax.set_xticks(ticks, names, fontsize=8)
        ax.set(ylabel=unit, title=f"{unit}: {run.label}")
        handles = [Patch(color=SEGMENTED, label="segmentation only")]
        if corrected:
            handles.append(Patch(color=CORRECTED, label="after simulated correction"))
        ax.legend(handles=handles, fontsize=8)
    return fig


def example(volume: Volume, image: np.ndarray, *, protocol: Preset, title: str, slices: int = 3) -> Figure:
    """The slices of one volume with the most failure voxels (or its middle slices): image, reference,
    prediction, failure voxels, uncertainty map, and the patches the detector flags at the operating point
    (Figs. 5-6)."""
    failing = volume.failures.sum((1, 2))
    order = np.argsort(-failing, kind="stable")[:slices] if failing.any() else \
        np.arange(volume.failures.shape[0])[len(failing) // 2:][:slices]
    chosen = sorted(int(z) for z in order)
    flagged = None
    if volume.patch_probs is not None:
        shape = volume.failures.shape[1:]
        flagged = np.stack([expand(protocol.flagged(p, protocol.operating_point), shape) for p in volume.patch_probs])
    columns = ["image", "reference", "prediction", "failure voxels", "uncertainty"]
    columns += ["flagged patches"] if flagged is not None else []
    (y0, y1), (x0, x1) = heart_box(volume)
    fig = Figure(figsize=(2.3 * len(columns), 2.3 * len(chosen) * (y1 - y0) / (x1 - x0) + 0.5))
    axes = fig.subplots(len(chosen), len(columns), squeeze=False)
    for row, z in zip(axes, chosen, strict=True):
        img = image[z]
        for ax in row:
            ax.imshow(img, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(x0 - 0.5, x1 - 0.5)
            ax.set_ylim(y1 - 0.5, y0 - 0.5)  # rows grow downwards, as imshow draws them
        row[1].imshow(volume.reference_grid[z], cmap=LABELS, vmin=0, vmax=3, alpha=0.6, interpolation="nearest")
        row[2].imshow(volume.prediction_grid[z], cmap=LABELS, vmin=0, vmax=3, alpha=0.6, interpolation="nearest")
        row[3].imshow(np.ma.masked_where(~volume.failures[z], volume.failures[z]), cmap=ListedColormap(["#ff00ff"]),
                      alpha=0.9, interpolation="nearest")
        shown = row[4].imshow(volume.uncertainty[z].astype(np.float32), cmap="magma", vmin=0, vmax=1,
                              interpolation="nearest")
        fig.colorbar(shown, ax=row[4], fraction=0.046, pad=0.02)
        if flagged is not None:
            row[5].imshow(np.ma.masked_where(~flagged[z], flagged[z]), cmap=ListedColormap(["#00ff00"]), alpha=0.35,
                          interpolation="nearest")
            row[5].contour(volume.failures[z], levels=[0.5], colors="#ff00ff", linewidths=0.8)
        row[0].set_ylabel(f"slice {z}", fontsize=9)
    for ax, name in zip(axes[0], columns, strict=True):
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def heart_box(volume: Volume, margin: int = 24) -> tuple[tuple[int, int], tuple[int, int]]:
    """((y0, y1), (x0, x1)): the in-plane box around every labelled, predicted or failing voxel of the volume,
    grown by ``margin`` voxels (34 mm on the 1.4 mm grid) and clipped to the slice; the whole slice when the
    volume holds none. The examples show this box: on a real scan the heart fills a tenth of the field of view."""
    shown = (volume.reference_grid > 0) | (volume.prediction_grid > 0) | volume.failures
    ny, nx = shown.shape[1:]
    if not shown.any():
        return (0, ny), (0, nx)
    ys, xs = np.nonzero(shown.any(0))
    return ((max(0, int(ys.min()) - margin), min(ny, int(ys.max()) + 1 + margin)),
            (max(0, int(xs.min()) - margin), min(nx, int(xs.max()) + 1 + margin)))
