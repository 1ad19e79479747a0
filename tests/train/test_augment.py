"""Recipe augmentation and the poly schedule, against hand-computed cases and numpy's own rotations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from uqbench.api import Profile, Recipe
from uqbench.registry import registry
from uqbench.train import augment
from uqbench.train.loop import DeviceSampler, PatchSampler, lr_scheduler, train

QUARTER_TURN = np.array([[0.0, -1.0], [1.0, 0.0]])


def _slice() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    lab = np.zeros((30, 36), np.uint8)
    lab[8:20, 10:25] = 1
    lab[12:16, 14:18] = 3
    return rng.random((30, 36)).astype(np.float32), lab


def test_warp_without_turn_or_scale_is_the_plain_crop() -> None:
    img, lab = _slice()
    centre = (5 + 3.5, 7 + 3.5)  # the 8 x 8 patch with corner (5, 7): its middle is 3.5 voxels in
    assert np.array_equal(augment.warp(lab, centre, np.eye(2), size=8, order=0), lab[5:13, 7:15])
    assert np.allclose(augment.warp(img, centre, np.eye(2), size=8, order=1), img[5:13, 7:15], atol=1e-6)


def test_a_quarter_turn_is_numpys_clockwise_rot90_of_the_crop() -> None:
    # o -> centre + R (o - m) with R = [[0, -1], [1, 0]] reads crop[n - 1 - ox, oy]: np.rot90(crop, -1)
    img, lab = _slice()
    centre = (5 + 3.5, 7 + 3.5)
    assert np.array_equal(augment.warp(lab, centre, QUARTER_TURN, size=8, order=0), np.rot90(lab[5:13, 7:15], -1))
    assert np.allclose(augment.warp(img, centre, QUARTER_TURN, size=8, order=1), np.rot90(img[5:13, 7:15], -1),
                       atol=1e-6)


def test_scaling_by_two_reads_every_second_position_and_zeros_beyond_the_slice() -> None:
    ramp = np.tile(np.arange(12, dtype=np.float32)[:, None], (1, 12))  # value = row
    # patch 4 (m = 1.5) about (5.5, 5.5), s = 2: rows 5.5 + 2 (o - 1.5) = 2.5, 4.5, 6.5, 8.5 (linear: exact)
    out = augment.warp(ramp, (5.5, 5.5), 2 * np.eye(2), size=4, order=1)
    assert np.allclose(out, np.tile([[2.5], [4.5], [6.5], [8.5]], (1, 4)))
    # about (1.5, 5.5) the first row reads row 1.5 - 3 = -1.5: beyond the slice, zero
    assert np.allclose(augment.warp(ramp, (1.5, 5.5), 2 * np.eye(2), size=4, order=1)[0], 0)


def test_the_device_warp_reads_what_the_host_warp_reads() -> None:
    img, lab = _slice()
    rng = np.random.default_rng(4)
    a = np.stack([augment.affine(rng) for _ in range(3)])
    centres = np.array([[10.5, 12.5], [15.0, 18.0], [3.5, 30.5]])
    host_img = np.stack([augment.warp(img, tuple(c), m, size=8, order=1) for c, m in zip(centres, a, strict=True)])
    host_lab = np.stack([augment.warp(lab, tuple(c), m, size=8, order=0) for c, m in zip(centres, a, strict=True)])
    dev_img = augment.warp_torch(torch.from_numpy(np.stack([img] * 3)), torch.from_numpy(centres),
                                 torch.from_numpy(a), size=8, nearest=False).numpy()
    dev_lab = augment.warp_torch(torch.from_numpy(np.stack([lab] * 3).astype(np.float32)), torch.from_numpy(centres),
                                 torch.from_numpy(a), size=8, nearest=True).numpy()
    assert np.allclose(dev_img, host_img, atol=1e-5)
    assert (dev_lab == host_lab).mean() > 0.97  # nearest ties at half-voxel positions may round either way


class _Lowest:
    """A generator whose every uniform draw is its range's lower end."""

    def uniform(self, low: float, high: float) -> float:
        return low


def test_intensity_applies_brightness_contrast_and_gamma_in_that_order() -> None:
    # [0, .5, 1] x 0.75 -> [0, .375, .75]; mean .375, contrast 0.75 -> [.09375, .375, .65625];
    # rescaled to [0, .5, 1], gamma 0.7: .5 ** .7 = .615572 -> .09375 + .5625 * .615572 = .440009
    out = augment.intensity(np.array([0.0, 0.5, 1.0], np.float32), _Lowest())  # type: ignore[arg-type]  # a stub
    assert np.allclose(out, [0.09375, 0.440009, 0.65625], atol=1e-5)


def test_intensity_on_the_device_has_the_host_ranges() -> None:
    x = torch.rand(64, 8, 8, generator=torch.Generator().manual_seed(0))
    out = augment.intensity_torch(x, torch.Generator().manual_seed(1))
    ratio = out.mean((1, 2)) / x.mean((1, 2))  # contrast and gamma keep ...
    assert out.shape == x.shape and torch.isfinite(out).all() and not torch.equal(out, x)
    assert ratio.min() > 0.5 and ratio.max() < 1.5


@pytest.mark.parametrize("device_sampler", [False, True])
def test_augmented_patches_keep_their_shapes_and_invent_no_label(device_sampler: bool) -> None:
    slices = [_slice()] * 3
    if device_sampler:
        xs, ys = DeviceSampler(slices, 16, device="cpu", seed=0, foreground=0.5, context=4, spatial=1.0,
                               intensity=1.0).batch(32)
        xs, ys = xs.numpy(), ys.numpy()
    else:
        xs, ys = PatchSampler(slices, 16, np.random.default_rng(0), foreground=0.5, context=4, spatial=1.0,
                              intensity=1.0).batch(32)
    assert xs.shape == (32, 1, 24, 24) and ys.shape == (32, 16, 16)
    assert set(np.unique(ys)) <= {0, 1, 3} and np.isfinite(xs).all()
    plain = PatchSampler(slices, 16, np.random.default_rng(0), foreground=0.5, context=4).batch(32)[0]
    assert not np.allclose(xs, plain)


def test_a_recipe_without_augmentation_draws_the_patches_it_drew_before() -> None:
    slices = [_slice()] * 3
    a = PatchSampler(slices, 16, np.random.default_rng(0), foreground=0.5).batch(8)
    b = PatchSampler(slices, 16, np.random.default_rng(0), foreground=0.5, spatial=0.0, intensity=0.0).batch(8)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("device_sampler", [False, True])
def test_a_kept_orientation_draws_the_same_crops_unturned(device_sampler: bool) -> None:
    slices = [_slice()] * 3

    def draw(max_turn: float) -> tuple[np.ndarray, np.ndarray]:
        if device_sampler:
            xs, ys = DeviceSampler(slices, 16, device="cpu", seed=0, foreground=0.5, max_turn=max_turn).batch(16)
            return xs.numpy(), ys.numpy()
        return PatchSampler(slices, 16, np.random.default_rng(0), foreground=0.5, max_turn=max_turn).batch(16)

    (turned_x, turned_y), (kept_x, kept_y) = draw(180.0), draw(0.0)
    turns = [next(k for k in range(4) if np.array_equal(np.rot90(x, k), t))
             for x, t in zip(kept_x[:, 0], turned_x[:, 0], strict=True)]
    assert all(np.array_equal(np.rot90(y, k), t) for y, k, t in zip(kept_y, turns, turned_y, strict=True))
    assert any(turns)


def test_a_kept_orientation_turns_the_spatial_share_by_at_most_max_turn() -> None:
    def angles(max_turn: float) -> np.ndarray:
        rng = np.random.default_rng(0)
        a = np.stack([augment.affine(rng, max_turn) for _ in range(200)])
        return np.degrees(np.arctan2(a[:, 1, 0], a[:, 0, 0]))

    assert np.abs(angles(15.0)).max() <= 15 and np.abs(angles(15.0)).max() > 12
    assert np.abs(angles(180.0)).max() > 150


def test_poly_schedule_decays_the_rate_to_zero_at_the_last_step() -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = lr_scheduler(opt, Recipe(loss="ce", iterations=10, batch_size=1, patch_size=8, learning_rate=0.01,
                                     lr_decay_every=1, schedule="poly"))
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # 0.01 (1 - k / 10) ** 0.9: k = 0 0.01, k = 5 0.01 * 0.5 ** 0.9 = 0.0053589, after the last step 0
    assert rates[0] == pytest.approx(0.01) and rates[5] == pytest.approx(0.0053589, rel=1e-4)
    assert opt.param_groups[0]["lr"] == 0


class _Killed(Exception):
    pass


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_augmenting_recipe_trains_and_resumes_to_the_same_weights(tmp_path: Path, precision: str) -> None:
    # the cpu recipe's choices (dice-ce, poly, both augmentations, bf16 autocast), killed after its first
    # checkpoint (step 50 of 60) with steps 51-55 lost and redone on resumption
    seg = registry().create("segmenter", "drn")
    recipe = replace(seg.recipe(Profile.QUICK), iterations=60, batch_size=2, patch_size=32, loss="dice-ce",
                     schedule="poly", spatial=0.5, intensity=0.5)
    loss = registry().create("loss", "dice-ce")
    slices = [_slice()] * 2

    def fit(checkpoint: Path, kill_at: int = 0) -> torch.nn.Module:
        seen = 0

        def advance(n: int) -> None:
            nonlocal seen
            seen += n
            if seen == kill_at:
                raise _Killed

        return train(segmenter=seg, recipe=recipe, loss=loss, slices=slices, device="cpu", seed=3,
                     checkpoint=checkpoint, advance=advance, precision=precision)

    straight = fit(tmp_path / "a.pt")
    with pytest.raises(_Killed):
        fit(tmp_path / "b.pt", kill_at=55)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["step"] == 50
    resumed = fit(tmp_path / "b.pt")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
