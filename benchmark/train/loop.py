"""Train a segmenter on 2-D slices of the 1.4 mm grid: random square patches, random 90-degree rotations,
Adam with weight decay and a step learning-rate decay (paper section V-A). Checkpoints are written
at intervals and an interrupted training resumes from the last one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from uqbench.api import NUM_CLASSES, Loss, Recipe, Segmenter


class PatchSampler:
    """Draws (image, label) batches of square patches from a list of slices, with random rot90.

    A ``foreground`` share of the patches is centred on a random labelled voxel (the rest are placed
    uniformly), so short CPU recipes see enough of the small structures; 0 samples uniformly."""

    def __init__(self, slices: Sequence[tuple[np.ndarray, np.ndarray]], patch: int, rng: np.random.Generator,
                 foreground: float = 0.0) -> None:
        self.patch, self.rng, self.foreground = patch, rng, foreground
        self.images, self.labels, self.fg = [], [], []
        for img, lab in slices:  # pad slices smaller than a patch with background
            py, px = max(0, patch - img.shape[0]), max(0, patch - img.shape[1])
            self.images.append(np.pad(img, ((0, py), (0, px))))
            self.labels.append(np.pad(lab, ((0, py), (0, px))))
            self.fg.append(np.argwhere(self.labels[-1] > 0).astype(np.int32))
        self.with_fg = [i for i, f in enumerate(self.fg) if len(f)]

    def _corner(self, i: int, centred: bool) -> tuple[int, int]:
        h, w = self.images[i].shape
        p, rng = self.patch, self.rng
        if centred:
            cy, cx = self.fg[i][rng.integers(0, len(self.fg[i]))]
            return int(np.clip(cy - p // 2, 0, h - p)), int(np.clip(cx - p // 2, 0, w - p))
        return int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        p, rng = self.patch, self.rng
        xs = np.empty((size, 1, p, p), np.float32)
        ys = np.empty((size, p, p), np.int64)
        for b in range(size):
            centred = bool(self.with_fg) and rng.random() < self.foreground
            i = int(self.with_fg[rng.integers(0, len(self.with_fg))] if centred else rng.integers(0, len(self.images)))
            y0, x0 = self._corner(i, centred)
            k = int(rng.integers(0, 4))
            xs[b, 0] = np.rot90(self.images[i][y0:y0 + p, x0:x0 + p], k)
            ys[b] = np.rot90(self.labels[i][y0:y0 + p, x0:x0 + p], k)
        return xs, ys


def train(segmenter: Segmenter, recipe: Recipe, loss: Loss, slices: Sequence[tuple[np.ndarray, np.ndarray]],
          device: str, seed: int, checkpoint: Path, advance: Callable[[int], None] | None = None) -> torch.nn.Module:
    """Train and return the network; resumes from ``checkpoint`` when it exists and finishes by writing it."""
    if recipe.patch_size % segmenter.size_multiple:
        raise ValueError(f"patch size {recipe.patch_size} is not a multiple of {segmenter.size_multiple}")
    torch.manual_seed(seed)
    model = segmenter.build(1, NUM_CLASSES, recipe.dropout, recipe.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    sched = lr_scheduler(opt, recipe)
    rng = np.random.default_rng(seed)
    step = 0
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        if advance:
            advance(step)
    sampler = PatchSampler(slices, recipe.patch_size, rng, recipe.foreground)
    every = max(50, recipe.iterations // 10)
    model.train()
    while step < recipe.iterations:
        xs, ys = sampler.batch(recipe.batch_size)
        logits = model(torch.from_numpy(xs).to(device))
        value = loss(logits, torch.from_numpy(ys).to(device))
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        step += 1
        if advance:
            advance(1)
        if step % every == 0 or step == recipe.iterations:
            _save(checkpoint, model, opt, sched, rng, step)
    return model


def lr_scheduler(opt: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's learning-rate schedule (see ``Recipe.schedule``)."""
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, recipe.lr_decay_every, recipe.lr_decay)
    if recipe.schedule == "snapshot":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, recipe.lr_decay_every)
    raise ValueError(f"unknown learning-rate schedule {recipe.schedule!r}: expected 'step' or 'snapshot'")


def _save(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: object,
          rng: np.random.Generator, step: int) -> None:
    tmp = path.with_suffix(".part")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),  # type: ignore[attr-defined]
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step}, tmp)
    tmp.replace(path)
