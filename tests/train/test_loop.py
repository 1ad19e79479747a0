"""The training loop: patch sampling and bit-exact resumption from a checkpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from uqbench.api import Profile, Recipe
from uqbench.registry import registry
from uqbench.train.loop import DeviceSampler, PatchSampler, lr_scheduler, train


def _slices(n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i in range(n):
        img = np.random.default_rng(i).random((40, 50)).astype(np.float32)
        lab = np.zeros((40, 50), np.uint8)
        lab[30:34, 40:44] = 1 + i % 3
        out.append((img, lab))
    return out


def test_foreground_patches_contain_labels_and_rotation_keeps_image_and_labels_aligned() -> None:
    sampler = PatchSampler(_slices(), 16, np.random.default_rng(0), foreground=1.0)
    _, ys = sampler.batch(32)
    assert (ys > 0).any(axis=(1, 2)).all()
    uniform = PatchSampler(_slices(), 16, np.random.default_rng(0), foreground=0.0).batch(64)[1]
    assert (uniform > 0).any(axis=(1, 2)).mean() < 0.5
    # every sampled image patch is a rot90 of a crop of some slice, with its labels rotated the same way
    img, lab = _slices()[0]
    s = PatchSampler([(img, lab)], 40, np.random.default_rng(1), foreground=1.0)
    x, y = s.batch(4)
    for b in range(4):
        k = next(k for k in range(4) if any(np.array_equal(np.rot90(img[:, x0:x0 + 40], k), x[b, 0])
                                             for x0 in range(11)))
        x0 = next(x0 for x0 in range(11) if np.array_equal(np.rot90(img[:, x0:x0 + 40], k), x[b, 0]))
        assert np.array_equal(np.rot90(lab[:, x0:x0 + 40], k), y[b])


def test_small_slices_are_padded_to_the_patch_size() -> None:
    xs, ys = PatchSampler([(np.ones((5, 7), np.float32), np.ones((5, 7), np.uint8))], 8,
                          np.random.default_rng(0)).batch(2)
    assert xs.shape == (2, 1, 8, 8) and xs.sum() == 2 * 35 and ys.sum() == 2 * 35


def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    seg = registry().create("segmenter", "drn")
    recipe = replace(seg.recipe(Profile.QUICK), iterations=6, batch_size=2, patch_size=32, lr_decay_every=4)
    loss = registry().create("loss", "ce")
    def fit(recipe: Recipe, checkpoint: Path) -> torch.nn.Module:
        return train(segmenter=seg, recipe=recipe, loss=loss, slices=_slices(), device="cpu", seed=3,
                     checkpoint=checkpoint)

    straight = fit(recipe, tmp_path / "a.pt")
    fit(replace(recipe, iterations=3), tmp_path / "b.pt")  # "interrupted"
    resumed = fit(recipe, tmp_path / "b.pt")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_snapshot_schedule_restarts_the_learning_rate_every_cycle() -> None:
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
    sched = lr_scheduler(opt, Recipe(loss="ce", iterations=30, batch_size=1, patch_size=8, learning_rate=0.02,
                                     lr_decay_every=10, schedule="snapshot"))
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[10] == lrs[20] == pytest.approx(0.02)
    assert lrs[5] == pytest.approx(0.01) and lrs[9] < 0.001  # cosine half-way, near zero at the cycle's end
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cyclic'"):
        lr_scheduler(opt, Recipe(loss="ce", iterations=30, batch_size=1, patch_size=8, learning_rate=0.02,
                                   lr_decay_every=10, schedule="cyclic"))


def _slices() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for h, w in ((40, 52), (36, 30), (48, 48)):
        img = rng.random((h, w)).astype(np.float32)
        lab = np.zeros((h, w), np.uint8)
        if h != 36:
            lab[h // 2: h // 2 + 4, 5:9] = 3
        out.append((img, lab))
    return out


def test_device_sampler_draws_rotated_crops_of_the_slices() -> None:
    slices = _slices()
    sampler = DeviceSampler(slices, 32, device="cpu", seed=0)
    x, y = sampler.batch(24)
    assert x.shape == (24, 1, 32, 32) and x.dtype == torch.float32 and y.shape == (24, 32, 32)
    assert y.dtype == torch.int64
    for patch, lab in zip(x[:, 0].numpy(), y.numpy(), strict=True):  # each is some rot90 of a window of a slice
        found = False
        for img, ref in slices:
            padded = np.pad(img, ((0, max(0, 32 - img.shape[0])), (0, max(0, 32 - img.shape[1]))))
            ref_p = np.pad(ref, ((0, max(0, 32 - ref.shape[0])), (0, max(0, 32 - ref.shape[1]))))
            for k in range(4):
                back = np.rot90(patch, -k)
                hits = np.argwhere(np.isclose(padded, back[0, 0]))
                for y0, x0 in hits:
                    win = padded[y0:y0 + 32, x0:x0 + 32]
                    if win.shape == (32, 32) and np.array_equal(win, back):
                        found = np.array_equal(ref_p[y0:y0 + 32, x0:x0 + 32], np.rot90(lab, -k))
                        break
                if found:
                    break
            if found:
                break
        assert found


def test_device_sampler_centres_on_labels_and_repeats_with_its_seed() -> None:
    sampler = DeviceSampler(_slices(), 16, device="cpu", seed=3, foreground=1.0)
    _, y = sampler.batch(40)
    assert (y.reshape(40, -1) > 0).any(1).all()  # every patch holds the labelled voxel it is centred on
    a = DeviceSampler(_slices(), 16, device="cpu", seed=3).batch(8)
    b = DeviceSampler(_slices(), 16, device="cpu", seed=3).batch(8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bf16_training_on_cpu_keeps_float32_weights_and_learns(tmp_path: Path) -> None:
    seg = registry().create("segmenter", "drn")
    recipe = replace(seg.recipe(Profile.QUICK), iterations=3, batch_size=2, patch_size=32)
    loss = registry().create("loss", "ce")
    torch.manual_seed(3)
    init = seg.build(in_channels=1, num_classes=4, dropout=recipe.dropout, width=recipe.width).state_dict()
    model = train(segmenter=seg, recipe=recipe, loss=loss, slices=_slices(), device="cpu", seed=3,
                  checkpoint=tmp_path / "c.pt", precision="bf16")
    weights = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())
    assert any(not torch.equal(v, init[k]) for k, v in weights.items() if k.endswith("weight"))


@pytest.mark.parametrize("on_device", [False, True])
def test_a_context_patch_holds_the_image_around_its_labels_and_zeros_beyond_the_edge(on_device: bool) -> None:
    """The image is the label map itself, so the centre of every image patch must equal its label patch; the
    slice is as small as the patch, so the whole context ring lies beyond its edge."""
    lab = np.random.default_rng(0).integers(0, 4, (12, 12)).astype(np.uint8)
    slices = [(lab.astype(np.float32) + 1, lab)]  # + 1: a zero in the ring is padding, never image
    sampler: PatchSampler | DeviceSampler = (
        DeviceSampler(slices, 12, device="cpu", seed=0, context=3) if on_device
        else PatchSampler(slices, 12, np.random.default_rng(0), context=3))
    xs, ys = sampler.batch(8)
    xs, ys = np.asarray(xs), np.asarray(ys)
    assert xs.shape == (8, 1, 18, 18) and ys.shape == (8, 12, 12)
    assert np.array_equal(xs[:, 0, 3:-3, 3:-3], ys + 1)
    ring = xs[:, 0].copy()
    ring[:, 3:-3, 3:-3] = 0
    assert not ring.any()
    big = np.random.default_rng(1).integers(0, 4, (30, 30)).astype(np.uint8)  # room around: real context
    x, y = PatchSampler([(big.astype(np.float32) + 1, big)], 12, np.random.default_rng(2), context=3).batch(16)
    assert np.array_equal(x[:, 0, 3:-3, 3:-3], y + 1) and (x[:, 0] > 0).mean() > 0.9
