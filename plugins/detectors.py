"""Failure detectors: score each 8x8 patch of a slice with a failure probability."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from uqbench import Context, DetectorExample, hookimpl
from uqbench.protocol.patches import patch_max, patch_mean


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


@hookimpl
def register_detectors(register) -> None:  # type: ignore[no-untyped-def]
    register(Threshold)
