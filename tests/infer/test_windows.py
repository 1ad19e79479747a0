"""Sliding-window prediction: windows cover the slice, a network blind to its input's size gives the same softmax
windowed as whole, and a network that is not (instance norm) is given exactly its training-sized inputs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from uqbench.api import Profile, window_of, windowed_of
from uqbench.infer.sampling import Drawer, predict_volume
from uqbench.infer.windows import predict_windowed, starts, weights
from uqbench.registry import registry


def test_window_starts_cover_the_axis_at_most_half_a_window_apart() -> None:
    assert starts(16, 16) == [0]
    assert starts(20, 16) == [0, 4]  # one more window, flush with the end
    assert starts(40, 16) == [0, 8, 16, 24]  # (40 - 16) / 8 = 3 steps of exactly half a window
    assert starts(41, 16) == [0, 6, 12, 19, 25]  # 25 / 8 -> 4 steps of 6.25, rounded
    with pytest.raises(ValueError, match="shorter than the window"):
        starts(15, 16)


def test_window_weights_peak_at_the_centre_and_never_vanish() -> None:
    w = weights(16).numpy()
    assert w.shape == (16, 16) and w.max() == pytest.approx(1.0)
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert w[7, 7] == w[8, 8] == pytest.approx(1.0)  # the 4 middle voxels, half a voxel off the centre
    assert w[7, 4] == pytest.approx(np.exp(-1.5))  # 3.5 against 0.5 voxels off, sd 2: exp(-(3.5^2 - 0.5^2) / 8)
    assert w[0, 0] == pytest.approx(1e-3)  # exp(-(7.5^2 - 0.5^2) / 4) ~ 7.8e-7, floored


def _softmax(net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda t: net(t).softmax(1)


def test_a_network_blind_to_input_size_gives_the_whole_slice_result_windowed() -> None:
    torch.manual_seed(0)
    for context, net in ((0, nn.Conv2d(1, 4, 1)), (2, nn.Conv2d(1, 4, 5))):  # 5x5 unpadded: context 2
        x = torch.rand(3, 1, 40 + 2 * context, 52 + 2 * context)
        with torch.no_grad():
            whole, tiled = net(x).softmax(1), predict_windowed(_softmax(net), x, window=16, context=context)
        torch.testing.assert_close(tiled, whole)  # every window sees the very voxels the whole slice shows it


def test_instance_norm_sees_training_sized_windows_only() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 1), nn.InstanceNorm2d(4))
    x = torch.rand(2, 1, 32, 32)
    x[..., :16, :16] += 5  # a bright quarter: whole-slice statistics differ from any window's
    with torch.no_grad():
        tiled = predict_windowed(_softmax(net), x, window=16, context=0)
        corner = net(x[..., :16, :16]).softmax(1)
        whole = net(x).softmax(1)
    # the top-left voxel is covered by the first window alone at any weight: it is that window's own prediction
    torch.testing.assert_close(tiled[..., 0, 0], corner[..., 0, 0])
    assert not torch.allclose(tiled[..., 0, 0], whole[..., 0, 0], atol=1e-3)


def test_windowed_drawer_pads_small_slices_to_a_window_and_returns_their_shape() -> None:
    seg = registry().create("segmenter", "unet")
    assert windowed_of(seg)
    model = seg.build(in_channels=1, num_classes=4, dropout=0.0, width=0.0625)
    drawer = Drawer(sampler=registry().create("sampler", "mc-dropout"), models=[model], multiple=16, window=32)
    image = np.random.default_rng(0).random((2, 20, 50)).astype(np.float32)
    mean, unc = predict_volume(drawer, image, umap=registry().create("uncertainty", "emap"), samples=1, seed=0)
    assert mean.shape == (2, 4, 20, 50) and unc.shape == (2, 20, 50)
    np.testing.assert_allclose(mean.sum(1), 1.0, atol=1e-5)


def test_windowed_must_be_a_bool() -> None:
    class Odd:
        windowed = "yes"

    assert windowed_of(object()) is False
    with pytest.raises(ValueError, match="windowed must be True or False"):
        windowed_of(Odd())


def test_a_windowed_segmenter_is_predicted_in_windows_of_its_patch_size_others_whole() -> None:
    unet, drn = registry().create("segmenter", "unet"), registry().create("segmenter", "drn")
    recipe = unet.recipe(Profile.CPU)
    assert window_of(unet, recipe) == recipe.patch_size == 128
    assert window_of(drn, drn.recipe(Profile.CPU)) is None


def test_windows_split_over_several_calls_give_the_one_call_result() -> None:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.InstanceNorm2d(4))
    x, calls = torch.rand(3, 1, 40, 40), []

    def counted(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape[0])
        return net(t).softmax(1)

    with torch.no_grad():
        one = predict_windowed(counted, x, window=16, context=0)
        split = predict_windowed(counted, x, window=16, context=0, batch=7)  # 2 positions of 3 slices a call
    assert calls == [48] + [6] * 8
    torch.testing.assert_close(split, one)
