"""Failure detectors: score each 8x8 patch of a slice with a failure probability."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from uqbench import Context, Detector, DetectorExample, Register, hookimpl
from uqbench.plugin import grid_shape, patch_max, patch_mean, save_torch


class Threshold:
    """Training-free: flags a patch when its mean uncertainty exceeds a threshold chosen on the training folds.

    ``fit`` picks the threshold that maximises F1 of patch failure labels over the training slices.
    ``predict`` returns a monotone rescaling of the patch mean uncertainty u that maps the threshold
    to 0.5: u / (2t) below it, 0.5 + (u - t) / (2(1 - t)) above, so ranking metrics see u itself and
    the harness's 0.5 cut flags exactly u > t."""

    name = "threshold"

    def __init__(self) -> None:
        self.threshold = 0.5

    def fit(self, examples: Sequence[DetectorExample], ctx: Context) -> None:
        scores, labels = [], []
        for ex in examples:
            if ex.failures is None:
                raise ValueError("threshold detector: training examples need failure labels")
            scores.append(patch_mean(ex.uncertainty).ravel())
            labels.append(patch_max(ex.failures).ravel() > 0)
        s, y = np.concatenate(scores), np.concatenate(labels)
        if not y.any():
            self.threshold = float(s.max()) if s.size else 0.5  # no failure to find: flag nothing seen
            return
        order = np.argsort(-s, kind="stable")
        s_sorted, y_sorted = s[order], y[order]
        tp = np.cumsum(y_sorted)
        flagged = np.arange(1, s.size + 1)
        last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # cut only between distinct scores
        f1 = np.where(last, 2 * tp / (flagged + y.sum()), -1)
        k = int(f1.argmax())
        below = s_sorted[k + 1] if k + 1 < s.size else 0.0
        self.threshold = float(min(max((s_sorted[k] + below) / 2, 1e-6), 1 - 1e-6))

    def predict(self, example: DetectorExample) -> np.ndarray:
        u = patch_mean(example.uncertainty)
        t = self.threshold
        p = np.where(u <= t, u / (2 * t), 0.5 + (u - t) / (2 * (1 - t)))
        return np.clip(p, 0, 1).astype(np.float32)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"threshold": self.threshold}))

    def load(self, path: Path) -> None:
        self.threshold = float(json.loads(Path(path).read_text())["threshold"])


class SResNetDetector:
    """The paper's detection network: a shallow ResNet scoring each 8x8 patch from image and uncertainty map.

    Trained with weighted cross-entropy on the training folds' failures (uqbench_plugins.detectors.sresnet).

    ``sresnet:N`` trains N steps instead of the profile's (300 quick, 1,500 cpu, 20,000 paper)."""

    name = "sresnet"
    penalties: tuple[float, float] | None = None  # Eq. 6's weighted cross-entropy

    def __init__(self, iterations: str | None = None) -> None:
        self.iterations = _positive_int(iterations, f"{self.name}:N")
        self.model: Any = None
        self.w_pos = 0.0
        self.crop = 80

    def fit(self, examples: Sequence[DetectorExample], ctx: Context) -> None:
        from uqbench_plugins.detectors import sresnet

        if any(ex.failures is None for ex in examples):
            raise ValueError("sresnet detector: training examples need failure labels")
        recipe = sresnet.PROFILES[ctx.profile]
        recipe = replace(recipe, penalties=self.penalties)
        if self.iterations is not None:
            recipe = replace(recipe, iterations=self.iterations)
        self.crop = recipe.crop
        self.model, self.w_pos = sresnet.train_network(examples, recipe=recipe, device=ctx.device, seed=ctx.seed,
                                                       checkpoint=Path(ctx.workdir) / "sresnet-checkpoint.pt")

    def predict(self, example: DetectorExample) -> np.ndarray:
        from uqbench_plugins.detectors import sresnet

        if self.model is None:
            raise RuntimeError("sresnet detector: predict() before fit() or load()")
        if self.w_pos == 0:  # no failure among the training patches: nothing was learnt to flag
            return np.zeros(grid_shape(example.image.shape), np.float32)
        return sresnet.predict_slice(self.model, example, self.crop)

    def save(self, path: Path) -> None:
        save_torch({"model": self.model.state_dict(), "width": self.model.width, "w_pos": self.w_pos,
                    "crop": self.crop}, path)

    def load(self, path: Path) -> None:
        import torch

        from uqbench_plugins.detectors import sresnet

        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model = sresnet.SResNet(width=state["width"])
        self.model.load_state_dict(state["model"])
        self.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        self.w_pos, self.crop = state["w_pos"], state["crop"]


class PenalisedSResNetDetector(SResNetDetector):
    """The paper's detection network trained with its authors' loss instead of Eq. 6's weighted cross-entropy.

    The loss of their code's ``rsn`` detector: unweighted cross-entropy plus soft false-negative and
    false-positive penalties, 1.2 and 0.085, summed over a crop's patches (utils/detection/trainers.py,
    networks/detection/general_setup.py). Eq. 6's weight puts p = 0.5 where a failure has a 1 / (1 + w_pos)
    chance (0.5-1 % on real ACDC); on 80 x 80 crops (100 patches) these penalties put it near 8 %, so the
    operating point flags fewer patches.

    ``sresnet-fnfp:N`` trains N steps instead of the profile's."""

    name = "sresnet-fnfp"
    penalties = (1.2, 0.085)


def _positive_int(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{what}: N must be a positive integer, got {value!r}")
    return int(value)


@hookimpl
def register_detectors(register: Register[Detector]) -> None:
    register(Threshold)
    register(SResNetDetector)
    register(PenalisedSResNetDetector)
