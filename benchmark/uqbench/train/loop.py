"""Train a segmenter on 2-D slices of the 1.4 mm grid: random square patches, random 90-degree rotations,
Adam with weight decay and a step learning-rate decay (paper section V-A); a recipe may add rotation, scaling and
intensity augmentation (uqbench.train.augment) and a poly schedule. Checkpoints are written
at intervals and an interrupted training resumes from the last one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from uqbench.api import NUM_CLASSES, Loss, Recipe, Segmenter, any_orientation, context_of, network_of
from uqbench.devices import autocast, channels_last
from uqbench.errors import MethodFault
from uqbench.train import augment
from uqbench.train import checkpoint as checkpoints


class PatchSampler:
    """Draws (image, label) batches of square patches from a list of slices, with random rot90.

    A ``foreground`` share of the patches is centred on a random labelled voxel (the rest are placed
    uniformly), so short CPU recipes see enough of the small structures; 0 samples uniformly. With a
    segmenter ``context`` c, each image patch also holds the c voxels of image around its label patch (zeros
    beyond the slice's edge): images [B, 1, P + 2c, P + 2c], labels [B, P, P]. A ``spatial`` share of the patches
    is read turned and scaled about the patch's centre, and an ``intensity`` share has its grey values changed
    (uqbench.train.augment); at 0 neither draws a random number, so the draws are those of a recipe without them.
    ``max_turn`` below 180 degrees keeps the slices' orientation (``Recipe.max_turn``): the quarter turn is still
    drawn, and not applied, so every other draw is the same as with quarter turns."""

    def __init__(self, slices: Sequence[tuple[np.ndarray, np.ndarray]], patch: int, rng: np.random.Generator, *,
                 foreground: float = 0.0, context: int = 0, spatial: float = 0.0, intensity: float = 0.0,
                 max_turn: float = 180.0) -> None:
        self.patch, self.rng, self.foreground, self.context = patch, rng, foreground, context
        self.spatial, self.intensity, self.max_turn = spatial, intensity, max_turn
        self.images, self.labels, self.fg = [], [], []
        for img, lab in slices:  # pad slices smaller than a patch with background, images also by the context
            py, px = max(0, patch - img.shape[0]), max(0, patch - img.shape[1])
            self.images.append(np.pad(img, ((context, py + context), (context, px + context))))
            self.labels.append(np.pad(lab, ((0, py), (0, px))))
            self.fg.append(np.argwhere(self.labels[-1] > 0).astype(np.int32))
        self.with_fg = [i for i, f in enumerate(self.fg) if len(f)]

    def _corner(self, i: int, centred: bool) -> tuple[int, int]:
        h, w = self.labels[i].shape
        p, rng = self.patch, self.rng
        if centred:
            cy, cx = self.fg[i][rng.integers(0, len(self.fg[i]))]
            return int(np.clip(cy - p // 2, 0, h - p)), int(np.clip(cx - p // 2, 0, w - p))
        return int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        p, rng, q = self.patch, self.rng, self.patch + 2 * self.context
        xs = np.empty((size, 1, q, q), np.float32)
        ys = np.empty((size, p, p), np.int64)
        for b in range(size):
            centred = bool(self.with_fg) and rng.random() < self.foreground
            i = int(self.with_fg[rng.integers(0, len(self.with_fg))] if centred else rng.integers(0, len(self.images)))
            y0, x0 = self._corner(i, centred)
            if self.spatial and rng.random() < self.spatial:
                a, mid = augment.affine(rng, self.max_turn), (p - 1) / 2
                image = augment.warp(self.images[i], (y0 + mid + self.context, x0 + mid + self.context), a, size=q,
                                     order=1)
                label = augment.warp(self.labels[i], (y0 + mid, x0 + mid), a, size=p, order=0)
            else:  # the image is offset by the context
                image, label = self.images[i][y0:y0 + q, x0:x0 + q], self.labels[i][y0:y0 + p, x0:x0 + p]
            turns = int(rng.integers(0, 4))  # drawn either way (class docstring)
            k = turns if any_orientation(self.max_turn) else 0
            xs[b, 0], ys[b] = np.rot90(image, k), np.rot90(label, k)
            if self.intensity and rng.random() < self.intensity:
                xs[b, 0] = augment.intensity(xs[b, 0], rng)
        return xs, ys


class DeviceSampler:
    """The same draws as :class:`PatchSampler` (uniform or labelled-voxel-centred square patches, random
    rot90), made on the device from slices kept there, with a device generator: on a GPU no batch is
    assembled on the host and nothing waits for it.

    Slices are zero-padded to a common size; a slice's patch corners stay inside its own (padded-to-patch)
    extent, and a centred patch picks a slice with labels uniformly, then one of its labelled voxels. Images
    carry ``context`` voxels of image around each label patch, as :class:`PatchSampler`'s, and the same
    ``spatial`` and ``intensity`` augmentation and ``max_turn`` are applied on the device."""

    def __init__(self, slices: Sequence[tuple[np.ndarray, np.ndarray]], patch: int, *, device: str, seed: int,
                 foreground: float = 0.0, context: int = 0, spatial: float = 0.0, intensity: float = 0.0,
                 max_turn: float = 180.0) -> None:
        self.patch, self.foreground, self.device, c = patch, foreground, device, context
        self.context, self.spatial, self.intensity, self.max_turn = context, spatial, intensity, max_turn
        h = max(patch, *(img.shape[0] for img, _ in slices))
        w = max(patch, *(img.shape[1] for img, _ in slices))
        images = np.zeros((len(slices), h + 2 * c, w + 2 * c), np.float32)
        labels = np.zeros((len(slices), h, w), np.uint8)
        extent = np.zeros((len(slices), 2), np.int64)
        coords, counts = [], []
        for i, (img, lab) in enumerate(slices):
            images[i, c: c + img.shape[0], c: c + img.shape[1]] = img
            labels[i, : lab.shape[0], : lab.shape[1]] = lab
            extent[i] = max(patch, img.shape[0]), max(patch, img.shape[1])
            fg = np.argwhere(lab > 0)
            coords.append(fg)
            counts.append(len(fg))
        self.images = torch.from_numpy(images).to(device)
        self.labels = torch.from_numpy(labels).to(device)
        self.extent = torch.from_numpy(extent).to(device)
        n = np.asarray(counts)
        self.with_fg = torch.from_numpy(np.flatnonzero(n)).to(device)
        self.count = torch.from_numpy(n).to(device)
        self.offset = torch.from_numpy(np.concatenate([[0], np.cumsum(n)[:-1]])).to(device)
        self.coords = torch.from_numpy(np.concatenate(coords).astype(np.int64)).to(device)
        self.gen = torch.Generator(device).manual_seed(seed)
        self.span = torch.arange(patch, device=device)
        self.image_span = torch.arange(patch + 2 * c, device=device)

    def _rand(self, size: int) -> torch.Tensor:
        return torch.rand(size, generator=self.gen, device=self.device)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [size, 1, P + 2c, P + 2c] float32 and labels [size, P, P] int64, on the device."""
        p, n = self.patch, self.images.shape[0]
        centred = self._rand(size) < self.foreground if len(self.with_fg) else torch.zeros(size, dtype=torch.bool,
                                                                                           device=self.device)
        idx = (self._rand(size) * n).long().clamp_max(n - 1)
        pick = self.with_fg[(self._rand(size) * len(self.with_fg)).long().clamp_max(max(len(self.with_fg) - 1, 0))] \
            if len(self.with_fg) else idx
        idx = torch.where(centred, pick, idx)
        room = self.extent[idx] - p  # corners may go from 0 to room
        y0 = (self._rand(size) * (room[:, 0] + 1)).long()
        x0 = (self._rand(size) * (room[:, 1] + 1)).long()
        if len(self.with_fg):
            voxel = self.offset[idx] + (self._rand(size) * self.count[idx]).long().clamp_min(0)
            voxel = torch.minimum(voxel, self.offset[idx] + (self.count[idx] - 1).clamp_min(0))
            voxel = voxel.clamp(0, self.coords.shape[0] - 1)  # slices without labels: any row; not used
            cy, cx = self.coords[voxel, 0], self.coords[voxel, 1]
            y0 = torch.where(centred, torch.minimum((cy - p // 2).clamp_min(0), room[:, 0]), y0)
            x0 = torch.where(centred, torch.minimum((cx - p // 2).clamp_min(0), room[:, 1]), x0)
        rows = (y0[:, None] + self.span)[:, :, None]
        cols = (x0[:, None] + self.span)[:, None, :]
        ys = self.labels[idx[:, None, None], rows, cols]
        rows = (y0[:, None] + self.image_span)[:, :, None]  # the images are offset by the context
        cols = (x0[:, None] + self.image_span)[:, None, :]
        xs = self.images[idx[:, None, None], rows, cols]
        if self.spatial:  # every patch is warped and a spatial share kept: no wait on the host for a count
            xs, ys = self._warp(idx, (y0, x0), (xs, ys))
        k = (self._rand(size) * 4).long().clamp_max(3) * int(any_orientation(self.max_turn))  # drawn either way
        for r in (1, 2, 3):
            sel = k == r
            xs[sel], ys[sel] = torch.rot90(xs[sel], r, (1, 2)), torch.rot90(ys[sel], r, (1, 2))
        if self.intensity:
            keep = self._rand(size)[:, None, None] < self.intensity
            xs = torch.where(keep, augment.intensity_torch(xs, self.gen), xs)
        return xs[:, None], ys.long()

    def _warp(self, idx: torch.Tensor, corner: tuple[torch.Tensor, torch.Tensor],
              patches: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The patches with a ``spatial`` share read turned and scaled about their centres (augment.warp)."""
        (y0, x0), (xs, ys) = corner, patches
        size, p, c = idx.shape[0], self.patch, self.context
        turn = np.deg2rad(self.max_turn)
        theta = self._rand(size) * 2 * np.pi if any_orientation(self.max_turn) else (self._rand(size) * 2 - 1) * turn
        low, high = np.log(augment.SCALE[0]), np.log(augment.SCALE[1])
        s = torch.exp(low + (high - low) * self._rand(size))
        cos, sin = torch.cos(theta) * s, torch.sin(theta) * s
        a = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        centre = torch.stack([y0, x0], -1).float() + (p - 1) / 2
        images = augment.warp_torch(self.images[idx], centre + c, a, size=p + 2 * c, nearest=False)
        labels = augment.warp_torch(self.labels[idx].float(), centre, a, size=p, nearest=True).round().to(ys.dtype)
        keep = self._rand(size)[:, None, None] < self.spatial
        return torch.where(keep, images, xs), torch.where(keep, labels, ys)


def train(*, segmenter: Segmenter, recipe: Recipe, loss: Loss, slices: Sequence[tuple[np.ndarray, np.ndarray]],
          device: str, seed: int, checkpoint: Path, advance: Callable[[int], None] | None = None,
          compile_model: bool = False, precision: str = "fp32", channels_first: bool = False) -> torch.nn.Module:
    """Train and return the network; resumes from ``checkpoint`` when it exists and finishes by writing it.
    ``compile_model`` runs the training steps through ``torch.compile`` (the returned module is not compiled);
    ``precision`` bf16 runs the forward pass under bf16 autocast (the loss in float32; see uqbench.devices).

    The network is channels-last (uqbench.devices; its one-channel input is the same in either layout), unless
    ``channels_first``, for a benchmark timing the other layout.
    On CUDA the slices live on the device (:class:`DeviceSampler`) and no step waits for the host."""
    if recipe.patch_size % segmenter.size_multiple:
        raise ValueError(f"patch size {recipe.patch_size} is not a multiple of {segmenter.size_multiple}")
    if not (0 <= recipe.spatial <= 1 and 0 <= recipe.intensity <= 1):
        raise ValueError(f"augmentation shares spatial {recipe.spatial} and intensity {recipe.intensity} must lie in "
                         "[0, 1]")
    if not 0 <= recipe.max_turn <= 180:
        raise ValueError(f"max_turn {recipe.max_turn} must lie in [0, 180] degrees")
    context = context_of(segmenter)
    gpu = torch.device(device).type == "cuda"
    torch.manual_seed(seed)
    model = network_of(segmenter, recipe)
    model = channels_last(model.to(device), not channels_first)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay,
                           amsgrad=recipe.amsgrad)
    sched = lr_scheduler(opt, recipe)
    rng = np.random.default_rng(seed)
    sampler: PatchSampler | DeviceSampler = (
        DeviceSampler(slices, recipe.patch_size, device=device, seed=seed, foreground=recipe.foreground,
                      context=context, spatial=recipe.spatial, intensity=recipe.intensity,
                      max_turn=recipe.max_turn) if gpu
        else PatchSampler(slices, recipe.patch_size, rng, foreground=recipe.foreground, context=context,
                          spatial=recipe.spatial, intensity=recipe.intensity, max_turn=recipe.max_turn))
    state = checkpoints.resume(checkpoint, model=model, opt=opt, sched=sched, rng=rng, device=device)
    step = state["step"]
    if isinstance(sampler, DeviceSampler) and "sampler_rng" in state:
        sampler.gen.set_state(state["sampler_rng"])
        torch.cuda.set_rng_state(state["cuda_rng"])
    if advance and step:
        advance(step)
    every = max(50, recipe.iterations // 10)
    model.train()
    forward = torch.compile(model) if compile_model else model
    first_bad = torch.full((2,), -1, dtype=torch.long, device=device)  # first step of non-finite logits, loss
    while step < recipe.iterations:
        if isinstance(sampler, DeviceSampler):
            x, y = sampler.batch(recipe.batch_size)
        else:
            xs, ys = sampler.batch(recipe.batch_size)
            x, y = torch.from_numpy(xs).to(device), torch.from_numpy(ys).to(device)
        with autocast(device, precision):
            logits = forward(x)
        if logits.shape != (x.shape[0], NUM_CLASSES, *y.shape[1:]):
            raise MethodFault("segmenter", f"the network returned logits {tuple(logits.shape)} for a batch "
                                           f"{tuple(x.shape)}; expected {(x.shape[0], NUM_CLASSES, *y.shape[1:])}")
        value = loss(logits.float(), y)
        if value.ndim != 0:
            raise MethodFault("loss", f"returned a tensor of shape {tuple(value.shape)}, not a scalar")
        bad = torch.stack([~torch.isfinite(logits).all(), ~torch.isfinite(value)])
        first_bad = torch.where(bad & (first_bad < 0), step + 1, first_bad)  # on the device: no wait per step
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        sched.step()
        step += 1
        if advance:
            advance(1)
        if step % every == 0 or step == recipe.iterations:
            _check_finite(first_bad)  # before a checkpoint could keep the damage
            extra = ({"sampler_rng": sampler.gen.get_state(), "cuda_rng": torch.cuda.get_rng_state()}
                     if isinstance(sampler, DeviceSampler) else {})
            checkpoints.save(checkpoint, model=model, opt=opt, sched=sched, rng=rng, step=step, extra=extra)
    return model


def load_trained(*, segmenter: Segmenter, recipe: Recipe, checkpoint: Path, device: str) -> torch.nn.Module:
    """The network :func:`train` left in ``checkpoint`` (its final weights), on ``device``."""
    model = network_of(segmenter, recipe)
    model.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=False)["model"])
    return channels_last(model.to(device))


def _check_finite(first_bad: torch.Tensor) -> None:
    """Blame whichever went non-finite first: the network's logits (the segmenter) or the loss's value."""
    logits_step, loss_step = (int(s) for s in first_bad.tolist())
    if logits_step > 0 and (loss_step < 0 or logits_step <= loss_step):
        raise MethodFault("segmenter", f"the network's logits became NaN or infinite at training step {logits_step}")
    if loss_step > 0:
        raise MethodFault("loss", f"returned NaN or infinity at training step {loss_step} (the logits were finite)")


def lr_scheduler(opt: torch.optim.Optimizer, recipe: Recipe) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's learning-rate schedule (see ``Recipe.schedule``)."""
    if recipe.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, recipe.lr_decay_every, recipe.lr_decay)
    if recipe.schedule == "snapshot":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, recipe.lr_decay_every)
    if recipe.schedule == "poly":  # nnU-Net's: lr0 (1 - step / iterations) ** 0.9, zero at the last step
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1 - step / recipe.iterations) ** 0.9)
    raise ValueError(f"unknown learning-rate schedule {recipe.schedule!r}: expected 'step', 'snapshot' or 'poly'")
