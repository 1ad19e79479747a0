"""From network output to a scored label map: arg-max, largest component, back to original geometry."""

from __future__ import annotations

import numpy as np
from uqbench.data.preprocess import labels_to_original
from uqbench.protocol.metrics import largest_component


def finalise(mean_probs: np.ndarray) -> np.ndarray:
    """Label map [Z, Y, X] on the network grid: arg-max of the mean softmax, largest 3-D component per class."""
    return largest_component(mean_probs.argmax(1).astype(np.uint8))


def to_original(labels: np.ndarray, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                target: float) -> np.ndarray:
    """The network-grid label map on the original voxel grid, where every metric is computed."""
    return labels_to_original(labels, shape, spacing, target)
