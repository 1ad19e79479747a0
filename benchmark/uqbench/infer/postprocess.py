"""From network output to a label map: arg-max of the mean softmax and the largest component per class."""

from __future__ import annotations

import numpy as np

from uqbench.protocol.metrics import largest_component


def finalise(mean_probs: np.ndarray) -> np.ndarray:
    """Label map [Z, Y, X] on the network grid: arg-max of the mean softmax, largest 3-D component per class."""
    return largest_component(mean_probs.argmax(1).astype(np.uint8))

