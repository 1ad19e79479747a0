"""Sliding-window prediction for networks whose output depends on the size of their input.

A network with instance normalisation normalises each feature map by statistics of the whole input it is given.
Trained on 128 x 128 patches, such a network sees statistics of a patch; handed a whole 300 x 300 slice at test time,
it sees those of the slice, and regions far from the heart can change class (docs/cpu-recipes.md: unet labelled a
5-6x LV-sized blob of dark background in an image corner LV in 11 of fold 3's 50 volumes, and no longer did once
predicted in training-sized windows). A segmenter that declares ``windowed = True`` is therefore predicted as
nnU-Net predicts every network: in windows of its training patch size, half a window apart, whose softmax outputs
are averaged with weights falling off towards each window's edge (a Gaussian of sd window / 8, as nnU-Net's
sliding-window inference, ``nnunetv2/inference/sliding_window_prediction.py``), where the convolutions' zero
padding makes the network least sure of its context.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch


def starts(n: int, window: int) -> list[int]:
    """First indices of windows of ``window`` covering [0, n) at most half a window apart, the last flush with the
    end (n >= window)."""
    if n < window:
        raise ValueError(f"an axis of {n} voxels is shorter than the window ({window})")
    count = 1 + -(-(n - window) // max(1, window // 2))  # ceil((n - window) / step) more windows after the first
    return sorted({round(i * (n - window) / (count - 1)) for i in range(count)} if count > 1 else {0})


@lru_cache(maxsize=8)
def weights(window: int) -> torch.Tensor:
    """[window, window] Gaussian importance of each output voxel, sd window / 8 about the centre, floored at a
    thousandth of its peak so that every voxel counts."""
    r = np.arange(window, dtype=np.float64) - (window - 1) / 2
    g = np.exp(-0.5 * (r / (window / 8)) ** 2)
    w = np.outer(g, g)
    return torch.from_numpy(np.maximum(w / w.max(), 1e-3).astype(np.float32))


def predict_windowed(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, window: int, context: int,
                     batch: int = 256) -> torch.Tensor:
    """Softmax [N, C, H, W] of input [N, 1, H + 2c, W + 2c] (H, W >= ``window``) from ``forward`` applied to the
    windows [N, 1, window + 2c, window + 2c] of the input, weighted by :func:`weights`. Each call of ``forward``
    gets the N inputs' windows at as many positions as keep it within ``batch`` windows (one position at least),
    so a GPU's batch of T passes of a volume stays bounded."""
    c, n = context, x.shape[0]
    h, w = x.shape[-2] - 2 * c, x.shape[-1] - 2 * c
    corners = [(y, z) for y in starts(h, window) for z in starts(w, window)]
    per_call = max(1, batch // n)
    g = weights(window).to(x.device)
    total = torch.zeros((h, w), device=x.device)  # the weights each voxel gathers: the windows' own, not their output
    for y, z in corners:
        total[y:y + window, z:z + window] += g
    out: torch.Tensor | None = None
    for first in range(0, len(corners), per_call):
        group = corners[first:first + per_call]
        probs = forward(torch.cat([x[..., y:y + window + 2 * c, z:z + window + 2 * c] for y, z in group]))
        if out is None:
            out = torch.zeros((n, probs.shape[1], h, w), dtype=probs.dtype, device=probs.device)
        for i, (y, z) in enumerate(group):
            out[..., y:y + window, z:z + window] += probs[i * n:(i + 1) * n] * g
    assert out is not None  # starts() gives every axis one window at least
    return out / total
