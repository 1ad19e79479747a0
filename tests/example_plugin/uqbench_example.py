"""An example uqbench plugin: one small method of each kind, registered through the ``uqbench`` entry point.

Copy this file and pyproject.toml beside it to start your own plugin. Networks import torch inside
``build()`` so `uqbench plugins` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import uqbench
from uqbench import (
    Case,
    Context,
    Dataset,
    Detector,
    DetectorExample,
    Forward,
    Loss,
    Profile,
    Recipe,
    Register,
    Sampler,
    Segmenter,
    UncertaintyMap,
)
from uqbench.plugin import acdc_cases, acdc_fingerprint, acdc_folds, acdc_patient_dirs, acdc_problems, patch_max


class TinyNet:
    """A two-layer convolutional net with MC dropout: the smallest useful segmenter."""

    name = "example-net"
    size_multiple = 1

    def build(self, *, in_channels: int, num_classes: int, dropout: float, width: float = 1.0) -> Any:
        from torch import nn

        c = max(4, int(16 * width))
        return nn.Sequential(nn.Conv2d(in_channels, c, 5, padding=2), nn.BatchNorm2d(c), nn.ReLU(), nn.Dropout(dropout),
                             nn.Conv2d(c, c, 3, padding=2, dilation=2), nn.ReLU(), nn.Dropout(dropout),
                             nn.Conv2d(c, num_classes, 1))

    def recipe(self, profile: Profile) -> Recipe:
        return Recipe(loss="example-l2", iterations=20, batch_size=4, patch_size=32, learning_rate=1e-2,
                      lr_decay_every=1000)


class SquaredError:
    """Mean squared error between softmax and one-hot labels, summed over classes (the Brier score)."""

    name = "example-l2"

    def __call__(self, logits: Any, labels: Any) -> Any:
        from torch.nn import functional as F

        p = logits.float().softmax(1)
        return ((p - F.one_hot(labels, p.shape[1]).permute(0, 3, 1, 2)) ** 2).sum(1).mean()


class MaxVariance:
    """Largest per-class variance over the MC samples, scaled by its bound 1/4 (the preliminary paper's u-map)."""

    name = "example-maxvar"
    samples = 4

    def __call__(self, probs: Any) -> Any:
        return (probs.float().var(0, unbiased=False).amax(1) * 4).clamp(0, 1)


class InputNoise:
    """Gaussian input noise: T deterministic passes of the segmenter's model, each on the image plus noise of
    standard deviation ``sd`` (``example-noise:0.05``), drawn from torch's seeded generator."""

    name = "example-noise"
    members = 1

    def __init__(self, sd: str = "0.05") -> None:
        self.sd = float(sd)
        if not self.sd >= 0:
            raise ValueError(f"the noise's standard deviation must be 0 or more, not {sd!r}")

    def count(self, requested: int, *, one_pass: bool) -> int:
        return 1 if one_pass else requested

    def draw(self, forward: Forward, x: Any, *, samples: int, one_pass: bool, group: int) -> Iterator[Any]:
        import torch

        for _ in range(samples):
            noisy = x if one_pass else x + self.sd * torch.randn_like(x)
            yield forward(noisy)[None]


class Everywhere:
    """Flags every patch that the segmentation touches; ignores the uncertainty (a floor to beat)."""

    name = "example-everywhere"

    def fit(self, examples: Sequence[DetectorExample], ctx: Context) -> None:
        return None

    def predict(self, example: DetectorExample) -> np.ndarray:
        return (patch_max(example.segmentation > 0) > 0).astype(np.float32)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({}))

    def load(self, path: Path) -> None:
        json.loads(Path(path).read_text())


class Folder:
    """ACDC layout read through uqbench.plugin's layout helpers (shows the dataset contract)."""

    name = "example-folder"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def problems(self) -> list[str]:
        return acdc_problems(self.root)[0]

    def cases(self) -> Iterator[Case]:
        return acdc_cases(self.root)

    def folds(self) -> Mapping[str, int]:
        table = acdc_folds()
        return {p.name: table[p.name] for p in acdc_patient_dirs(self.root)}

    def fingerprint(self) -> str:
        return acdc_fingerprint(self.root)


@uqbench.hookimpl
def register_segmenters(register: Register[Segmenter]) -> None:
    register(TinyNet)


@uqbench.hookimpl
def register_losses(register: Register[Loss]) -> None:
    register(SquaredError)


@uqbench.hookimpl
def register_samplers(register: Register[Sampler]) -> None:
    register(InputNoise)


@uqbench.hookimpl
def register_uncertainty_maps(register: Register[UncertaintyMap]) -> None:
    register(MaxVariance)


@uqbench.hookimpl
def register_detectors(register: Register[Detector]) -> None:
    register(Everywhere)


@uqbench.hookimpl
def register_datasets(register: Register[Dataset]) -> None:
    register(Folder)
