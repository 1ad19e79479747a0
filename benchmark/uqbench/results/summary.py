"""The typed summary of a run, as ``summary.json`` holds it: what the CLI table prints and what later readers
(leaderboard entries, reports) read, by attribute, never by string paths.

``SUMMARY_VERSION`` is written into every summary and bumped whenever a field changes name, type or
meaning; :func:`read` refuses a summary of another version rather than misread it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from uqbench.errors import DataError
from uqbench.protocol.calibration import Reliability, RiskCoverage
from uqbench.protocol.clinical import Agreement
from uqbench.protocol.detection import CorrectionMode, Froc, SliceDetection
from uqbench.protocol.presets import Preset
from uqbench.protocol.stats import Comparison, MannWhitney
from uqbench.records import from_json, to_json, write_json

SUMMARY_VERSION = 6  # 6: per-volume values and the correction budget's curves (preset version 3)

Metric = Literal["dice", "hd", "hd95", "hd95_directed_max", "assd"]
METRICS: tuple[Metric, ...] = ("dice", "hd", "hd95", "hd95_directed_max", "assd")
"""Per-class metrics summarised (uqbench.protocol.metrics.score); distances in mm."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stat:
    """Mean and sample sd (0 for one value) of a metric over ``n`` volumes."""

    mean: float
    sd: float
    n: int


ByPhaseClass = dict[str, dict[str, Stat]]
"""phase ("ED", "ES") -> class ("RV", "MYO", "LV") -> statistics."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scores:
    """Per-class metrics over a set of volumes (mean ± sd per phase and class) and the mean foreground Dice."""

    volumes: int
    dice: ByPhaseClass
    hd: ByPhaseClass
    hd95: ByPhaseClass  # pooled over both directions (MedPy, ACDC)
    hd95_directed_max: ByPhaseClass  # MONAI's
    assd: ByPhaseClass
    mean_foreground_dice: float  # over every volume and foreground class

    def metric(self, name: Metric) -> ByPhaseClass:
        """One metric's statistics per phase and class."""
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}: expected one of {', '.join(METRICS)}")
        value: ByPhaseClass = getattr(self, name)
        return value


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionTotals:
    """The detector at the protocol's operating point (probability > 0.5, or >= 0.5), pooled over volumes."""

    volumes: int
    voxel_sensitivity: float  # failure voxels inside flagged patches / all failure voxels
    patch_recall: float
    patch_precision: float
    false_positive_patches_per_volume: float
    share_of_slices_with_failures: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """Reliability of the mean softmax per class (one-vs-rest) and pooled, and the Brier score."""

    bins: int
    per_class: dict[str, Reliability]
    pooled: Reliability
    brier: float
    voxels: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectionCurves:
    """Voxel-level FROC and slice-level detection of the detector's patch probabilities."""

    froc: Froc
    slices: SliceDetection


@dataclass(frozen=True, slots=True, kw_only=True)
class EffortPoint:
    """Quality after correcting the patches above ``threshold``, against how much an expert inspects."""

    threshold: float
    flagged_patches: int
    share_of_patches: float
    share_of_slices: float
    dice: float  # mean over volumes and classes
    hd: float
    clinical_mae: dict[str, float]  # index -> MAE


@dataclass(frozen=True, slots=True, kw_only=True)
class EffortCurve:
    """The correction-effort curve and its areas (mean Dice against each share inspected)."""

    mode: CorrectionMode
    points: list[EffortPoint]
    auc_dice_vs_patches: float
    auc_dice_vs_slices: float


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeValues:
    """One volume's headline values, from which a board draws its intervals (``uqbench.protocol.budget``).
    The detector's fields are None without a detector."""

    patient: str
    phase: str
    fold: int
    dice: float  # mean over RV, MYO and LV as segmented: D(0)
    hd: float  # mean over the three structures, mm
    uncertainty: float | None  # the volume's score (mean map over its predicted foreground); None: no map
    aucc_random: float  # AUCC@B of the protocol's random order
    aucc_oracle: float  # AUCC@B of the oracle order
    aucc: float | None = None  # AUCC@B of the detector's order
    flagged: int | None = None  # patches flagged at the operating point
    false_positives: int | None = None  # of those, patches holding no failure voxel
    dice_flagged: float | None = None  # D(flagged) in the detector's order: Dice after correcting the flags
    dice_random_flagged: float | None = None  # D(flagged) in the random order


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetCurves:
    """Mean D(b) over volumes for b = 0..B in each order (``detector`` empty without a detector)."""

    budget: int
    mode: CorrectionMode
    detector: list[float]
    random: list[float]
    oracle: list[float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Clinical:
    """Agreement of each clinical index with the reference over the patients with both phases."""

    patients: int
    myocardial_density: float  # g/mL, of the LV mass
    units: dict[str, str]  # index -> unit
    indices: dict[str, Agreement]  # index -> agreement


@dataclass(frozen=True, slots=True, kw_only=True)
class Significance:
    """Corrected against segmentation-only: per metric, phase and class, and per clinical index's absolute error."""

    mann_whitney: MannWhitney  # the sidedness of every mann_whitney_p here
    dice: dict[str, dict[str, Comparison]] = field(default_factory=dict)
    hd: dict[str, dict[str, Comparison]] = field(default_factory=dict)
    clinical_abs_error: dict[str, Comparison] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetInfo:
    """Which data a run used: the reader, the folder, its content hash, and whether it is the phantom."""

    name: str
    root: str
    fingerprint: str
    phantom: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodRecord:
    """One method a run used, as the registry knows it, with the spec it was created from."""

    kind: str
    name: str
    distribution: str
    version: str
    plugin: str
    description: str
    spec: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """The distributions a run was allowed to load, per kind where each method came from, and what else its
    numbers depend on."""

    allowed_distributions: list[str] | None
    methods: dict[str, MethodRecord]
    uqbench: str
    git_commit: str | None  # of the uqbench source tree, when it is a git checkout
    torch: str
    device_name: str | None  # the GPU's name on CUDA, the CPU model on CPU
    precision: str
    cpu_threads: int  # torch's CPU threads in the process that ran (on CPU, training's last bits depend on it)
    fold_split: str  # sha256 of the (patient, fold) pairs of the dataset
    seed: int  # the run's seed; fold k trains with seed x 1000 + k (run.seeds; each stage's seed is in stages)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageRecord:
    """One stored stage a run used: its key in the stage store, whether it came from there, and its time
    (wall and device seconds: GPU seconds on CUDA, CPU seconds of the process on CPU) when it was computed."""

    stage: str
    fold: int
    cases: str  # "test" or "training" (the fold's own training patients)
    detail: str  # what tells two stages of one name and fold apart: "mc T=10" or "deterministic" for predict
    key: str
    from_store: bool
    wall_s: float
    device_s: float
    why: str  # why a stored output was recomputed ("forced", a damaged file), else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Results:
    """What the protocol measured of one set of cases (``uqbench.scoring.aggregate.measure``): the one result
    type, which a run's or evaluation's Summary and its held-out test set's block both extend.
    ``*_corrected`` and the detection parts are None when no detector ran."""

    segmentation: Scores  # every volume, as segmented
    corrected: Scores | None = None  # the volumes a detector scored, after simulated correction
    empty_reference: int  # class volumes with an empty reference
    empty_prediction: int  # class volumes predicted empty where the reference is not
    detection: DetectionTotals | None = None
    risk_coverage: RiskCoverage | None  # None: no uncertainty map (scored predictions made elsewhere)
    calibration: Calibration | None  # None: no class probabilities (scored predictions made elsewhere)
    detection_curves: DetectionCurves | None = None
    correction_effort: EffortCurve | None = None
    significance: Significance | None = None
    clinical: Clinical
    clinical_corrected: Clinical | None = None
    per_volume: list[VolumeValues]  # every volume's headline values, in case order
    budget_curves: BudgetCurves


def _results_of(results: Results) -> dict[str, Any]:
    """The fields of ``results``, for building a type that extends Results from it."""
    return {f.name: getattr(results, f.name) for f in dataclasses.fields(Results)}


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldOut(Results):
    """Results on a held-out test set (``--test-data``), kept apart from the cross-validation's: the segmenter
    trained on every training patient, the detector fitted on every cross-validation prediction."""

    dataset: DatasetInfo

    @classmethod
    def of(cls, results: Results, *, dataset: DatasetInfo) -> HeldOut:
        return cls(**_results_of(results), dataset=dataset)


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary(Results):
    """Everything a run (or an evaluation) measured, with how and where it was made."""

    summary_version: int = SUMMARY_VERSION
    profile: str
    device: str
    timings_s: dict[str, float]
    notes: list[str]
    protocol: Preset  # every protocol choice, with its name, overrides and hash
    stages: list[StageRecord]
    dataset: DatasetInfo
    provenance: Provenance
    test: HeldOut | None = None  # with --test-data

    @classmethod
    def of(cls, results: Results, *, profile: str, device: str, timings_s: dict[str, float], notes: list[str],
           protocol: Preset, stages: list[StageRecord], dataset: DatasetInfo, provenance: Provenance,
           test: HeldOut | None) -> Summary:
        return cls(**_results_of(results), profile=profile, device=device, timings_s=timings_s, notes=notes,
                   protocol=protocol, stages=stages, dataset=dataset, provenance=provenance, test=test)

    def record(self) -> dict[str, Any]:
        """The JSON form written to summary.json."""
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}


def write(path: Path, summary: Summary) -> None:
    """Write ``summary`` as JSON, atomically (a reader never sees half a file)."""
    write_json(path, summary.record())


def read(path: Path) -> Summary:
    """The summary in ``path``; DataError naming the file when it is unreadable, of another version or malformed."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing (the run has not finished)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable summary ({exc})") from None
    version = data.get("summary_version") if isinstance(data, dict) else None
    if version != SUMMARY_VERSION:
        raise DataError(f"{path}: summary version {version!r}; this uqbench reads version {SUMMARY_VERSION} "
                        "(rerun with this version, or read it with the uqbench that wrote it)")
    try:
        summary: Summary = from_json(Summary, data, "summary")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: malformed summary: {exc}") from None
    return summary

