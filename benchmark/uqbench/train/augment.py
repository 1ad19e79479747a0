"""Training-patch augmentation a recipe may ask for (method choices, never protocol): a random rotation by any
angle with an isotropic scaling, and random brightness, contrast and gamma. The ranges are those of nnU-Net's 2-D
training (nnUNetTrainer: scaling 0.7-1.4, multiplicative brightness and contrast 0.75-1.25, gamma 0.7-1.5); the
recipe sets how often each is applied (``Recipe.spatial``, ``Recipe.intensity``).

A spatial draw maps an output patch voxel o to the slice position ``centre + A (o - m)``, with m the patch's middle
and A = s R(theta): the patch sees a region s times its size, turned by theta. Images are read with linear
interpolation and zeros beyond the slice (as inference pads), labels by the nearest voxel, so no label is invented.
The same function serves the host (numpy/scipy) and, through :func:`warp_torch`, the device sampler.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from uqbench.api import any_orientation

SCALE = (0.7, 1.4)  # the zoom factor s, drawn log-uniformly so that zooming in and out are equally likely
BRIGHTNESS = (0.75, 1.25)  # a multiplicative factor on the whole patch
CONTRAST = (0.75, 1.25)  # a factor on the distance to the patch's mean
GAMMA = (0.7, 1.5)  # x -> x ** gamma on the patch rescaled to [0, 1], then scaled back


def affine(rng: np.random.Generator, max_turn: float = 180.0) -> np.ndarray:
    """A random 2 x 2 matrix s R(theta): theta uniform over the circle (``max_turn`` 180 degrees) or within
    +-``max_turn``, log s uniform over log SCALE."""
    turn = np.deg2rad(max_turn)
    theta = rng.uniform(0.0, 2 * np.pi) if any_orientation(max_turn) else rng.uniform(-turn, turn)
    s = float(np.exp(rng.uniform(np.log(SCALE[0]), np.log(SCALE[1]))))
    c, t = np.cos(theta), np.sin(theta)
    return s * np.array([[c, -t], [t, c]])


def warp(array: np.ndarray, centre: tuple[float, float], a: np.ndarray, *, size: int, order: Literal[0, 1]
         ) -> np.ndarray:
    """The ``size`` x ``size`` patch whose voxel o reads ``array`` at ``centre + a (o - (size - 1) / 2)``;
    ``order`` 1 interpolates linearly (images), 0 takes the nearest voxel (labels); zeros beyond the array."""
    middle = (size - 1) / 2
    offset = np.asarray(centre, np.float64) - a @ np.array([middle, middle])
    out = ndimage.affine_transform(array, a, offset=offset, output_shape=(size, size), order=order,
                                   mode="grid-constant", cval=0.0, prefilter=False)
    return np.asarray(out, dtype=array.dtype)


def warp_torch(arrays: torch.Tensor, centres: torch.Tensor, a: torch.Tensor, *, size: int, nearest: bool
               ) -> torch.Tensor:
    """:func:`warp` for a batch on the device: ``arrays`` [B, H, W] (float), ``centres`` [B, 2] (y, x),
    ``a`` [B, 2, 2]; returns [B, size, size]."""
    h, w = arrays.shape[1:]
    middle = (size - 1) / 2
    o = torch.arange(size, device=arrays.device, dtype=torch.float32) - middle
    grid = torch.stack(torch.meshgrid(o, o, indexing="ij"), -1)  # [size, size, (y, x)]
    pos = centres[:, None, None, :].float() + torch.einsum("bij,yxj->byxi", a.float(), grid)
    # grid_sample wants (x, y), normalised so that -1 and 1 are the centres of the edge voxels (align_corners)
    norm = torch.stack([pos[..., 1] / max(w - 1, 1), pos[..., 0] / max(h - 1, 1)], -1) * 2 - 1
    out = torch.nn.functional.grid_sample(arrays[:, None].float(), norm, mode="nearest" if nearest else "bilinear",
                                          padding_mode="zeros", align_corners=True)
    return out[:, 0]


def intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, then gamma, each drawn uniformly from its range, on one image patch."""
    x = x * rng.uniform(*BRIGHTNESS)
    mean = x.mean()
    x = (x - mean) * rng.uniform(*CONTRAST) + mean
    lo, hi = float(x.min()), float(x.max())
    if hi > lo:
        x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** rng.uniform(*GAMMA)
    return x.astype(np.float32)


def intensity_torch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """:func:`intensity` for a batch [B, H, W] on the device, one draw per patch."""
    def draw(bounds: tuple[float, float]) -> torch.Tensor:
        u = torch.rand(x.shape[0], 1, 1, generator=gen, device=x.device)
        return bounds[0] + (bounds[1] - bounds[0]) * u

    x = x * draw(BRIGHTNESS)
    mean = x.mean((1, 2), keepdim=True)
    x = (x - mean) * draw(CONTRAST) + mean
    lo, hi = x.amin((1, 2), keepdim=True), x.amax((1, 2), keepdim=True)
    span = (hi - lo).clamp_min(1e-12)
    return torch.where(hi > lo, lo + span * ((x - lo) / span) ** draw(GAMMA), x)
