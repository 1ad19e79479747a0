"""What a plugin of each kind must provide, and the values it exchanges with the harness.

Shapes: B batch (slices), C classes (4: 0 background, 1 RV, 2 myocardium, 3 LV), T predictive samples (see Sampler),
Z slices, Y/X in-plane. Images are float32, label maps uint8, maps float32 in [0, 1].

A registered class is instantiated with the ``:``-separated arguments that follow its name on
the command line, as strings, all defaulted: ``smp:unet:resnet34`` calls ``Smp("unet", "resnet34")``.
Class attributes (``name``, ``samples``, ``size_multiple``) are read without instantiating, so
listing plugins stays cheap; import torch inside methods, never at module import time. The contracts declare
them as read-only properties only so that a type checker accepts a plain ``name = "drn"`` in the class body.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

NUM_CLASSES = 4
CLASS_NAMES = ("background", "RV", "MYO", "LV")
PHASES = ("ED", "ES")
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
PATCH = 8  # side of the square patches a detector scores (paper section III-D)


class Profile(StrEnum):
    """A training recipe family; every output records which one produced it."""

    QUICK = "quick"  # CPU recipe for the phantom and smoke tests: small patches, narrow nets, few steps
    CPU = "cpu"  # the best a 2-core CPU trains on real ACDC in at most 30 minutes a fold
    PAPER = "paper"  # the paper's recipe (section V-A); wants a GPU


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One patient at one phase, in original geometry."""

    patient: str  # "patient001"
    phase: str  # "ED" | "ES"
    group: str  # "DCM", "HCM", "MINF", "NOR", "RV"
    image: np.ndarray  # float32 [Z, Y, X], raw intensities
    labels: np.ndarray | None  # uint8 [Z, Y, X] in {0, 1, 2, 3}; None when unlabelled
    spacing: tuple[float, float, float]  # mm, (z, y, x)
    affine: np.ndarray  # float64 [4, 4], the source file's
    height: float | None = None  # cm, from Info.cfg
    weight: float | None = None  # kg, from Info.cfg
    header: bytes | None = None  # the source NIfTI-1 header (348 bytes): outputs are written with its geometry


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """How the harness trains a segmenter under one profile."""

    loss: str  # a registered loss name
    iterations: int
    batch_size: int
    patch_size: int  # square training patches, a multiple of the segmenter's size_multiple
    learning_rate: float
    lr_decay_every: int  # "step": steps between multiplications by lr_decay; "snapshot": cycle length
    lr_decay: float = 0.1
    weight_decay: float = 1e-4  # Adam's (coupled, L2) weight decay
    amsgrad: bool = False  # Adam's AMSGrad variant
    width: float = 1.0  # channel multiplier passed to build(); 1.0 is the paper's architecture
    dropout: float = 0.1  # MC dropout probability (paper: 10 percent of hidden units)
    foreground: float = 0.0  # share of patches centred on a labelled voxel; 0 = uniform, as the paper
    schedule: str = "step"  # "step" decay, or "snapshot": cosine from learning_rate to 0, restarted every
    # lr_decay_every steps (the snapshot ensembles of Huang et al. 2017, as the paper trains DN), or "poly":
    # learning_rate (1 - step / iterations) ** 0.9, as nnU-Net (lr_decay_every unused)
    spatial: float = 0.0  # share of patches turned by a random angle and scaled 0.7-1.4 (uqbench.train.augment)
    intensity: float = 0.0  # share of patches given random brightness, contrast and gamma
    max_turn: float = 180.0  # degrees. 180: patches take any orientation (a random quarter turn each, the paper's
    # 90-degree rotations, and the spatial share's angle over the whole circle); less keeps the images' own
    # orientation: no quarter turns, the spatial angle uniform within +-max_turn (uqbench.train.augment)


def any_orientation(max_turn: float) -> bool:
    """Whether a recipe's ``max_turn`` lets patches take any orientation (180 degrees: random quarter turns, the
    spatial angle over the whole circle) rather than keeping the slices' own."""
    return max_turn >= 180


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """Run settings a plugin may need: passed, never read from globals."""

    profile: Profile
    device: str
    seed: int
    workdir: Path  # a private folder for this plugin, this fold


@runtime_checkable
class Segmenter(Protocol):
    """A network factory; the harness owns training, MC sampling and post-processing.

    The module must apply its dropout through ``torch.nn.Dropout``-family modules (the harness
    switches exactly those on for MC sampling and keeps batch norm in inference mode).

    A segmenter may declare an int ``context`` c (see :func:`context_of`): its network then reads c voxels of
    image beyond each side of what it labels, mapping [B, in_channels, H + 2c, W + 2c] to logits
    [B, num_classes, H, W] (H, W multiples of ``size_multiple``); the harness gives it real image there, zeros
    only beyond the image's edge, in training and in inference alike.

    A segmenter may declare ``windowed = True`` (see :func:`windowed_of`) when its network's output depends on the
    size of its input (instance normalisation): the harness then predicts each slice in windows of the recipe's
    patch size, as it was trained, not whole (uqbench.infer.windows).

    A segmenter may declare an int ``cpu_inputs_per_call`` n (see :func:`cpu_inputs_per_call_of`) when its
    network runs faster on a CPU fed a few inputs at a time: a CPU prediction then puts at most n inputs (slices
    times passes) through it per call, whatever a sampler's call holds. Dropout masks are drawn call by call, so
    the MC samples change with n, and the prediction stage is keyed with it.
    """

    @property
    def name(self) -> str:
        """Registry and CLI name, ``^[a-z][a-z0-9-]{0,31}$``."""
        ...

    @property
    def size_multiple(self) -> int:
        """H and W given to the network are multiples of this."""
        ...

    def build(self, *, in_channels: int, num_classes: int, dropout: float, width: float = 1.0) -> torch.nn.Module:
        """Return a module mapping float32 [B, in_channels, H, W] to logits [B, num_classes, H, W]; the harness
        passes every argument by name."""
        ...

    def recipe(self, profile: Profile) -> Recipe:
        """The default training recipe under ``profile``."""
        ...


def context_of(segmenter: object) -> int:
    """The voxels of image context a segmenter's network reads beyond each side of its output (0 unless it
    declares ``context``); ValueError unless that is a non-negative int."""
    c = getattr(segmenter, "context", 0)
    if not isinstance(c, int) or isinstance(c, bool) or c < 0:
        raise ValueError(f"context must be a non-negative int, not {c!r}")
    return c


def windowed_of(segmenter: object) -> bool:
    """Whether a segmenter's network is predicted in windows of its training patch size (False unless it declares
    ``windowed``); ValueError unless that is a bool."""
    w = getattr(segmenter, "windowed", False)
    if not isinstance(w, bool):
        raise ValueError(f"windowed must be True or False, not {w!r}")
    return w


def window_of(segmenter: object, recipe: Recipe) -> int | None:
    """The window a prediction puts through the network: the recipe's patch size for a ``windowed`` segmenter,
    None (whole slices) otherwise; one rule for runs and ``uqbench bench infer``."""
    return recipe.patch_size if windowed_of(segmenter) else None


def network_of(segmenter: Segmenter, recipe: Recipe) -> torch.nn.Module:
    """The segmenter's network as a run builds it for ``recipe``: one input channel, ACDC's classes, the recipe's
    dropout and width; one rule for training, loading a stored model and counting its layers."""
    return segmenter.build(in_channels=1, num_classes=NUM_CLASSES, dropout=recipe.dropout, width=recipe.width)


def cpu_inputs_per_call_of(segmenter: object) -> int | None:
    """The most inputs one network call of a CPU prediction takes (None: all a sampler's call holds, unless the
    segmenter declares ``cpu_inputs_per_call``); ValueError unless that is a positive int."""
    n = getattr(segmenter, "cpu_inputs_per_call", None)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"cpu_inputs_per_call must be a positive int, not {n!r}")
    return n


def inputs_per_call(segmenter: object, device: str) -> int | None:
    """The most inputs one network call of a prediction on ``device`` takes: the segmenter's
    ``cpu_inputs_per_call`` on a CPU, None (all a sampler's call holds) on CUDA."""
    return cpu_inputs_per_call_of(segmenter) if device == "cpu" else None


@runtime_checkable
class Loss(Protocol):
    """A training loss."""

    @property
    def name(self) -> str:
        """Registry and CLI name, ``^[a-z][a-z0-9-]{0,31}$``."""
        ...

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """logits [B, C, H, W] float, labels [B, H, W] int64 -> differentiable scalar."""
        ...


MOMENTS = ("variance", "mean_entropy")  # the optional running statistics a map can ask for


@dataclass(frozen=True, slots=True, kw_only=True)
class Moments:
    """Running statistics of T softmax samples, accumulated as they come so that the T samples are never
    stored: the mean, the variance (divided by T) and the mean of each sample's entropy (nats). The last
    two are None unless the map asked for them (``UncertaintyMap.needs``)."""

    samples: int
    mean: torch.Tensor  # [B, C, H, W]
    variance: torch.Tensor | None  # [B, C, H, W], population variance over the samples
    mean_entropy: torch.Tensor | None  # [B, H, W]


@runtime_checkable
class UncertaintyMap(Protocol):
    """A voxel-wise uncertainty measure computed from softmax samples.

    Optionally also ``from_moments(m: Moments) -> [B, H, W]``, the same map from running statistics; the
    harness then never stacks the T samples (faster, and memory independent of T). Such a map may declare
    ``needs: ClassVar[frozenset[str]]``, the statistics of ``MOMENTS`` it reads, so the harness skips the
    others (default: all). The contract kit checks that both give the same map, with only the declared
    statistics present."""

    @property
    def name(self) -> str:
        """Registry and CLI name, ``^[a-z][a-z0-9-]{0,31}$``."""
        ...

    @property
    def samples(self) -> int:
        """T, the samples it is computed from; 1 = one deterministic pass (dropout off)."""
        ...

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        """Softmax samples [T, B, C, H, W] -> map [B, H, W] in [0, 1]; higher = less certain."""
        ...


@runtime_checkable
class MomentMap(Protocol):
    """The optional part of an uncertainty map (see UncertaintyMap): the same map from running statistics."""

    def from_moments(self, m: Moments) -> torch.Tensor:
        """Running statistics of the T samples -> map [B, H, W] in [0, 1], equal to ``__call__`` on them."""
        ...


class Forward(Protocol):
    """The harness's network call, handed to a sampler's ``draw``: it runs a fold's trained model under the run's
    device and precision and checks the logits' shape. On a CPU it feeds the network at most the segmenter's
    ``cpu_inputs_per_call`` inputs at a time, so a sampler may pass a batch of any size."""

    def __call__(self, x: torch.Tensor, *, member: int = 0, stochastic: bool = False) -> torch.Tensor:
        """Softmax (float32) [N, C, H, W] of trained model ``member`` on input [N, 1, H + 2c, W + 2c] (c the
        segmenter's context); ``stochastic`` switches its dropout modules on, batch norm stays in inference
        mode. Rotated or flipped inputs are fine: H and W are multiples of the segmenter's ``size_multiple``."""
        ...


@runtime_checkable
class Sampler(Protocol):
    """How predictive samples are drawn from a fold's trained model(s): MC dropout, an ensemble, test-time
    augmentation. The harness trains and stores ``members`` models per fold (member 0 is the segmenter's own
    model; member m trains on its own seed stream), seeds torch's generator with the case's seed, and calls
    ``draw`` once per volume with its slices as the batch. Every map reads the samples' moments, so a map works
    on every sampler (bmap on an ensemble is the members' spread).

    A sampler may declare ``turns = True`` (see :func:`turns_of`) when ``draw`` turns the slices by quarter turns
    (tta): the harness then refuses it for a recipe that kept the slices' orientation in training
    (``Recipe.max_turn`` below 180), whose net never saw a turned slice."""

    @property
    def name(self) -> str:
        """Registry and CLI name, ``^[a-z][a-z0-9-]{0,31}$``."""
        ...

    @property
    def members(self) -> int:
        """The trained models it draws from (1: the segmenter's own); the harness, not the sampler, trains them."""
        ...

    def count(self, requested: int, *, one_pass: bool) -> int:
        """T, the samples ``draw`` yields when the map asks for ``requested`` (its own T, or ``--samples``) and
        is (``one_pass``) or is not a one-pass map, one that reads only a prediction (emap)."""
        ...

    def draw(self, forward: Forward, x: torch.Tensor, *, samples: int, one_pass: bool, group: int
             ) -> Iterator[torch.Tensor]:
        """Yield softmax samples [k, B, C, H, W] of input slices x [B, 1, H + 2c, W + 2c], ``samples`` (the
        ``count``) in all, in the input's orientation. ``group``: how many passes one ``forward`` call should
        batch on this device (1 on a CPU, T on CUDA), a hint for speed: the samples' distribution must not
        depend on it."""
        ...


def turns_of(sampler: object) -> bool:
    """Whether a sampler draws on slices turned by quarter turns (False unless it declares ``turns``); ValueError
    unless that is a bool."""
    t = getattr(sampler, "turns", False)
    if not isinstance(t, bool):
        raise ValueError(f"turns must be True or False, not {t!r}")
    return t


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectorExample:
    """One preprocessed slice (1.4 mm in-plane grid) as a detector sees it."""

    image: np.ndarray  # float32 [Y, X] in [0, 1]
    uncertainty: np.ndarray  # float32 [Y, X] in [0, 1]
    segmentation: np.ndarray  # uint8 [Y, X]
    failures: np.ndarray | None  # bool [Y, X]; None at prediction time


@runtime_checkable
class Detector(Protocol):
    """Scores each 8x8 patch of a slice with the probability that it holds a segmentation failure."""

    @property
    def name(self) -> str:
        """Registry and CLI name, ``^[a-z][a-z0-9-]{0,31}$``."""
        ...

    def fit(self, examples: Sequence[DetectorExample], ctx: Context) -> None:
        """Learn from labelled slices (``failures`` set) of the training folds."""
        ...

    def predict(self, example: DetectorExample) -> np.ndarray:
        """Failure probability per 8x8 patch, float32 [ceil(Y/8), ceil(X/8)] in [0, 1]; 0.5 flags."""
        ...

    def save(self, path: Path) -> None:
        """Write the fitted state as one file at ``path`` (the harness renames it into place afterwards); keep
        anything bigger, such as a training checkpoint, in ``Context.workdir``."""
        ...

    def load(self, path: Path) -> None:
        """Read back what ``save`` wrote to ``path``, into a new instance: predictions must not change."""
        ...


@runtime_checkable
class Dataset(Protocol):
    """A reader; the registered class is called as ``cls(root, *args)``."""

    @property
    def name(self) -> str:
        """Registry and CLI name, ``^[a-z][a-z0-9-]{0,31}$``."""
        ...

    def problems(self) -> list[str]:
        """Every problem found, one line each naming the file; empty when the data is clean."""
        ...

    def cases(self) -> Iterator[Case]:
        """Every labelled case; raises ``DataError`` naming the file on bad input."""
        ...

    def folds(self) -> Mapping[str, int]:
        """patient -> fold index for each patient of cases() that has one; a patient without (one of a held-out
        test set) is absent, and cross-validation refuses data that holds one."""
        ...

    def fingerprint(self) -> str:
        """A hash of the source files' content: equal fingerprints mean equal data."""
        ...
