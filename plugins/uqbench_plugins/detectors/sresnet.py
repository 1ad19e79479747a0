"""The paper's detection network (section III-D) and its training (section V-B), in torch.

S-ResNet: level 1 is a 7x7 convolution with 16 kernels (padding 3) and a 3x3 one with 32 (padding 1);
levels 2-4 are one residual block each (two 3x3 convolutions, the first with stride 2), so the output
stride is 8 and each output cell scores one 8x8 patch. Every convolution of the feature extractor is
followed by batch norm and ReLU (in a block the second ReLU comes after the shortcut is added). The
classifier is three 1x1 convolutions (128, 128, 2 channels) and a softmax. Inputs are two channels:
the image and the uncertainty map.

Our readings where the paper is not explicit: levels 2, 3, 4 have 32, 64 and 128 kernels (it says the
kernels increase from 16 in level 1 to 128 in level 4); a block's shortcut is a strided 1x1 convolution
with batch norm; dropout (p = 0.5) follows each residual block and each of the first two classifier layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import nn

from uqbench import DetectorExample, Profile
from uqbench.plugin import PATCH, grid_shape, patch_max, resume_checkpoint, save_checkpoint

WIDTHS = (16, 32, 32, 64, 128)  # level 1 (two convolutions), then the blocks of levels 2, 3, 4
CLASSIFIER = 128


def _conv_bn(cin: int, cout: int, kernel: int, *, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]


class _Block(nn.Module):
    """Residual block halving the resolution: conv(stride 2)-BN-ReLU-conv-BN, plus a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, 3, stride=2), nn.ReLU(inplace=True), *_conv_bn(cout, cout, 3))
        self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SResNet(nn.Module):
    """[B, 2, H, W] (H, W multiples of 8) -> logits [B, 2, H/8, W/8]; channel 1 is 'holds a failure'."""

    def __init__(self, dropout: float = 0.5, width: float = 1.0) -> None:
        super().__init__()
        self.width = width
        c = [max(4, round(w * width)) for w in WIDTHS]
        h = max(8, round(CLASSIFIER * width))
        layers: list[nn.Module] = [*_conv_bn(2, c[0], 7), nn.ReLU(inplace=True),
                                   *_conv_bn(c[0], c[1], 3), nn.ReLU(inplace=True)]
        for cin, cout in pairwise(c[1:]):
            layers += [_Block(cin, cout), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Conv2d(c[-1], h, 1), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Conv2d(h, h, 1), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Conv2d(h, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectorRecipe:
    """How the detection network is trained (paper V-B: Adam, batch 32, lr 1e-4 x0.1 after 10k steps,
    20k steps, dropout 0.5, weight decay, 80x80 training crops, a third forced to hold a failure)."""

    iterations: int
    batch_size: int
    learning_rate: float
    lr_decay_every: int
    width: float = 1.0
    lr_decay: float = 0.1
    weight_decay: float = 1e-4  # "weight decay was applied"; the value is ours, as for the segmenters
    dropout: float = 0.5
    crop: int = 80  # voxels; a multiple of 8
    forced: float = 1 / 3  # share of crops that hold at least one failure voxel
    # (false-negative, false-positive) weights of the authors' loss; None: the paper's Eq. 6
    penalties: tuple[float, float] | None = None


PAPER = DetectorRecipe(iterations=20_000, batch_size=32, learning_rate=1e-4, lr_decay_every=10_000)
# CPU recipe: a quarter of the channels and 300 steps of 16 crops (about 25 s a fold on 2 cores).
QUICK = DetectorRecipe(iterations=300, batch_size=16, learning_rate=1e-3, lr_decay_every=250, width=0.25)
# `cpu` profile: quick's network and rate, five times the steps (real ACDC's failures are rarer and subtler).
CPU = DetectorRecipe(iterations=1_500, batch_size=16, learning_rate=1e-3, lr_decay_every=1_250, width=0.25)
PROFILES = {Profile.PAPER: PAPER, Profile.CPU: CPU, Profile.QUICK: QUICK}


def padded_inputs(ex: DetectorExample, crop: int = 80) -> np.ndarray:
    """[2, Yp, Xp] float32 (image, uncertainty), zero-padded at the bottom and right to multiples of 8 and at
    least ``crop``, so the network's output cells are the harness's 8x8 patches (anchored at voxel 0, 0)."""
    y, x = ex.image.shape
    gy, gx = grid_shape(ex.image.shape)
    out = np.zeros((2, max(crop, gy * PATCH), max(crop, gx * PATCH)), np.float32)
    out[0, :y, :x], out[1, :y, :x] = ex.image, ex.uncertainty
    return out


def patch_targets(ex: DetectorExample, padded_shape: tuple[int, int]) -> np.ndarray:
    """Whether each 8x8 patch of the padded slice holds a failure voxel: uint8 [Yp/8, Xp/8]."""
    assert ex.failures is not None
    full = np.zeros(padded_shape, bool)
    full[: ex.failures.shape[0], : ex.failures.shape[1]] = ex.failures
    return (patch_max(full) > 0).astype(np.uint8)


def positive_weight(targets: Sequence[np.ndarray]) -> float:
    """w_pos of Eq. 6: the share of patches without a failure divided by the share with one (0 if none has)."""
    pos = sum(int(t.sum()) for t in targets)
    total = sum(t.size for t in targets)
    return (total - pos) / pos if pos else 0.0


def sample_crops(inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], n: int, *, recipe: DetectorRecipe,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training crops [n, 2, crop, crop] with their patch targets [n, crop/8, crop/8], on the patch grid,
    randomly rotated by multiples of 90 degrees. Each is forced with probability ``recipe.forced`` to hold a
    failure: a random slice with a failure, a random failing patch in it, a random crop around that patch;
    otherwise a random crop of a random slice."""
    g = recipe.crop // PATCH
    failing = [i for i, t in enumerate(targets) if t.any()]
    xs = np.empty((n, 2, recipe.crop, recipe.crop), np.float32)
    ts = np.empty((n, g, g), np.int64)
    for b in range(n):
        if failing and rng.random() < recipe.forced:
            i = failing[rng.integers(len(failing))]
            py, px = np.argwhere(targets[i])[rng.integers(int(targets[i].sum()))]
            gy, gx = targets[i].shape
            oy = rng.integers(max(0, py - g + 1), min(py, gy - g) + 1)
            ox = rng.integers(max(0, px - g + 1), min(px, gx - g) + 1)
        else:
            i = int(rng.integers(len(inputs)))
            gy, gx = targets[i].shape
            oy, ox = rng.integers(gy - g + 1), rng.integers(gx - g + 1)
        k = int(rng.integers(4))
        xs[b] = np.rot90(inputs[i][:, oy * PATCH:(oy + g) * PATCH, ox * PATCH:(ox + g) * PATCH], k, (1, 2))
        ts[b] = np.rot90(targets[i][oy:oy + g, ox:ox + g], k)
    return xs, ts


def crop_box(segmentation: np.ndarray, grid: tuple[int, int], minimum: int) -> tuple[int, int, int, int]:
    """Patch rows and columns [y0, y1) x [x0, x1) scored at test time (paper V-B): the box around the
    automatic segmentation's foreground, grown to at least ``minimum`` patches a side and kept inside the
    padded grid; a slice with no foreground gets a centred ``minimum`` x ``minimum`` box."""
    fg = np.argwhere(segmentation > 0) // PATCH
    spans = []
    for axis, size in enumerate(grid):
        if len(fg):
            lo, hi = int(fg[:, axis].min()), int(fg[:, axis].max()) + 1
        else:
            lo = hi = size // 2
        if hi - lo < minimum:
            lo = min(max(0, lo - (minimum - (hi - lo)) // 2), size - minimum)
            hi = lo + minimum
        spans += [lo, hi]
    return spans[0], spans[1], spans[2], spans[3]


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, w_pos: float) -> torch.Tensor:
    """Eq. 6: cross-entropy with failing patches weighted by ``w_pos``, averaged over patches."""
    weights = torch.tensor([1.0, w_pos], device=logits.device)
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return (weights[targets] * ce).mean()


def penalised_loss(logits: torch.Tensor, targets: torch.Tensor, penalties: tuple[float, float]) -> torch.Tensor:
    """The authors' detector loss (utils/detection/trainers.py ``get_loss``): unweighted cross-entropy averaged
    over patches, plus the soft false negatives (p(no failure) on failing patches) and soft false positives
    (p(failure) elsewhere) summed over a crop's patches and averaged over crops, weighted by ``penalties``."""
    fn_weight, fp_weight = penalties
    p = logits.softmax(1)
    y = targets.float()
    per_crop = (fn_weight * (p[:, 0] * y) + fp_weight * (p[:, 1] * (1 - y))).sum() / logits.shape[0]
    return torch.nn.functional.cross_entropy(logits, targets) + per_crop


def train_network(examples: Sequence[DetectorExample], *, recipe: DetectorRecipe, device: str, seed: int,
                  checkpoint: Path) -> tuple[SResNet, float]:
    """Train on labelled slices with the weighted cross-entropy of Eq. 6, or the authors' loss where the recipe
    has ``penalties``; resumes from ``checkpoint`` when it exists and writes it at intervals and at the end.
    Returns (network, w_pos)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs = [padded_inputs(ex, recipe.crop) for ex in examples]
    targets = [patch_targets(ex, x.shape[1:]) for ex, x in zip(examples, inputs, strict=True)]
    w_pos = positive_weight(targets)
    model = SResNet(recipe.dropout, recipe.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, recipe.lr_decay_every, recipe.lr_decay)
    step = resume_checkpoint(checkpoint, model=model, opt=opt, sched=sched, rng=rng, device=device)["step"]
    every = max(50, recipe.iterations // 10)
    model.train()
    while step < recipe.iterations:
        xs, ts = sample_crops(inputs, targets, recipe.batch_size, recipe=recipe, rng=rng)
        t = torch.from_numpy(ts).to(device)
        logits = model(torch.from_numpy(xs).to(device))
        loss = (weighted_loss(logits, t, w_pos) if recipe.penalties is None
                else penalised_loss(logits, t, recipe.penalties))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        if step % every == 0 or step == recipe.iterations:
            save_checkpoint(checkpoint, model=model, opt=opt, sched=sched, rng=rng, step=step)
    return model.eval(), w_pos


@torch.inference_mode()
def predict_slice(model: SResNet, ex: DetectorExample, crop: int) -> np.ndarray:
    """Failure probability per 8x8 patch [ceil(Y/8), ceil(X/8)]: the network scores the crop box, and
    patches outside it get 0."""
    x = padded_inputs(ex, crop)
    grid = (x.shape[1] // PATCH, x.shape[2] // PATCH)
    y0, y1, x0, x1 = crop_box(ex.segmentation, grid, crop // PATCH)
    device = next(model.parameters()).device
    logits = model(torch.from_numpy(x[None, :, y0 * PATCH:y1 * PATCH, x0 * PATCH:x1 * PATCH]).to(device))
    out = np.zeros(grid, np.float32)
    out[y0:y1, x0:x1] = logits.float().softmax(1)[0, 1].cpu().numpy()
    gy, gx = grid_shape(ex.image.shape)
    return out[:gy, :gx]
