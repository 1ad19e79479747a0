"""MC inference: running statistics equal the stacked samples, and batching samples changes nothing."""

from __future__ import annotations

import numpy as np
import torch

from uqbench.infer.mc import moments, predict_volume
from uqbench.registry import registry


def test_running_variance_is_exact_for_near_certain_voxels() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.full((10, 1, 4, 8, 8), -12.0)
    logits[:, :, 1] = 12.0 + 0.01 * torch.randn(10, 1, 8, 8, generator=g)  # p(RV) within 1e-10 of 1
    probs = logits.softmax(2)
    bmap = registry().create("uncertainty", "bmap")
    stacked, streamed = bmap(probs), bmap.from_moments(moments(probs))
    assert torch.allclose(stacked, streamed, atol=1e-7)  # E[p^2] - E[p]^2 would leave ~3e-4 here


def test_moments_of_grouped_samples_equal_one_at_a_time() -> None:
    probs = torch.rand(7, 2, 4, 3, 3, generator=torch.Generator().manual_seed(1)).softmax(2)
    m = moments(probs)
    torch.testing.assert_close(m.mean, probs.mean(0))
    torch.testing.assert_close(m.variance, probs.var(0, unbiased=False), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(m.mean_entropy, -(probs * probs.log()).sum(2).mean(0))


def test_samples_per_pass_do_not_change_a_deterministic_network() -> None:
    seg = registry().create("segmenter", "drn")
    model = seg.build(in_channels=1, num_classes=4, dropout=0.0, width=0.125)  # dropout 0: every sample is the same
    image = np.random.default_rng(0).random((3, 40, 48)).astype(np.float32)
    for name in ("bmap", "mi", "emap"):
        umap = registry().create("uncertainty", name)
        t = umap.samples
        a = predict_volume(model, image, umap=umap, samples=t, multiple=seg.size_multiple, device="cpu", seed=0,
                           per_pass=1)
        b = predict_volume(model, image, umap=umap, samples=t, multiple=seg.size_multiple, device="cpu", seed=0,
                           per_pass=t)
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)
        np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_moments_keep_only_the_statistics_asked_for() -> None:
    probs = torch.rand(5, 1, 4, 3, 3, generator=torch.Generator().manual_seed(2)).softmax(2)
    m = moments(probs, needs=())
    assert m.variance is None and m.mean_entropy is None
    torch.testing.assert_close(m.mean, probs.mean(0))
    assert moments(probs, needs=("variance",)).mean_entropy is None
    assert moments(probs, needs=("mean_entropy",)).variance is None


def test_moments_of_groups_of_samples_equal_the_stacked_statistics() -> None:
    from uqbench.infer.mc import _Accumulator

    probs = torch.rand(10, 2, 4, 5, 5, generator=torch.Generator().manual_seed(3)).softmax(2)
    acc = _Accumulator()
    for group in (probs[:1], probs[1:4], probs[4:5], probs[5:]):  # as T split over passes of mixed size
        acc.add(group)
    m = acc.result()
    torch.testing.assert_close(m.mean, probs.mean(0))
    torch.testing.assert_close(m.variance, probs.var(0, unbiased=False), atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(m.mean_entropy, -(probs * probs.log()).sum(2).mean(0))


def test_one_sample_of_an_mc_map_is_a_stochastic_pass_and_emap_stays_deterministic() -> None:
    """The paper's Table V row T = 1 is one MC-dropout pass: with an MC map, one sample depends on the seed;
    a map that declares one sample (emap) gets the deterministic network whatever the seed."""
    seg = registry().create("segmenter", "drn")
    model = seg.build(in_channels=1, num_classes=4, dropout=0.5, width=0.125)
    image = np.random.default_rng(0).random((2, 40, 48)).astype(np.float32)

    def mean(name: str, seed: int) -> np.ndarray:
        umap = registry().create("uncertainty", name)
        return predict_volume(model, image, umap=umap, samples=1, multiple=seg.size_multiple, device="cpu",
                              seed=seed)[0]

    assert not np.allclose(mean("bmap", 0), mean("bmap", 1))
    np.testing.assert_array_equal(mean("emap", 0), mean("emap", 1))
