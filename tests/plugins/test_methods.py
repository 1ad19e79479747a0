"""Built-in losses, uncertainty maps and the threshold detector against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uqbench.registry import registry
from uqbench.testing import tiny_examples


def _probs(t: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(t, 2, 4, 3, 3, generator=torch.Generator().manual_seed(seed)).softmax(2)


def test_bmap_is_eq1_mean_class_std_scaled_by_its_bound() -> None:
    p = _probs(5)
    arr = p.numpy().astype(np.float64)
    by_hand = arr.std(0, ddof=1).mean(1) / (0.5 * math.sqrt(5 / 4))
    out = registry().create("uncertainty", "bmap")(p)
    np.testing.assert_allclose(out.numpy(), by_hand, rtol=1e-5)


def test_bmap_reaches_its_largest_value_for_alternating_one_hot_samples() -> None:
    p = torch.zeros(4, 1, 4, 1, 1)
    p[0::2, :, 0] = 1
    p[1::2, :, 1] = 1  # two classes flip: their std is the bound, the other two are 0
    assert registry().create("uncertainty", "bmap")(p).item() == pytest.approx(0.5)



def test_variance_maps_of_one_sample_are_zero_stacked_and_streamed() -> None:
    """One stochastic pass (the paper's Table V, T = 1) shows no spread between samples."""
    from uqbench.infer.sampling import moments

    one = _probs(1)
    for name in ("bmap", "mi"):
        umap = registry().create("uncertainty", name)
        assert torch.equal(umap(one), torch.zeros(2, 3, 3)), name
        assert torch.allclose(umap.from_moments(moments(one)), torch.zeros(2, 3, 3), atol=1e-6), name

def test_emap_is_normalised_entropy_of_the_mean() -> None:
    uniform = torch.full((1, 1, 4, 2, 2), 0.25)
    assert torch.allclose(registry().create("uncertainty", "emap")(uniform), torch.ones(1, 2, 2))
    p = torch.tensor([0.7, 0.1, 0.1, 0.1]).view(1, 1, 4, 1, 1)
    h = -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)) / math.log(4)
    assert registry().create("uncertainty", "emap")(p).item() == pytest.approx(h, rel=1e-6)


def test_mi_is_zero_for_agreeing_samples_and_half_for_two_flipping_one_hots() -> None:
    mi = registry().create("uncertainty", "mi")
    same = _probs(1).expand(4, -1, -1, -1, -1)
    assert torch.allclose(mi(same), torch.zeros(2, 3, 3), atol=1e-6)
    p = torch.zeros(2, 1, 4, 1, 1)
    p[0, :, 0] = p[1, :, 1] = 1  # mean is (0.5, 0.5, 0, 0): H = log 2; each sample H = 0
    assert mi(p).item() == pytest.approx(math.log(2) / math.log(4))


def test_mi_by_hand_on_random_samples() -> None:
    p = _probs(5).double()
    mean = p.mean(0)
    h = lambda q, dim: -(q * q.log()).sum(dim)
    want = (h(mean, 1) - h(p, 2).mean(0)) / math.log(4)
    np.testing.assert_allclose(registry().create("uncertainty", "mi")(p).numpy(), want.numpy(), rtol=1e-5)


def test_maxprob_is_one_for_uniform_and_scaled_below() -> None:
    mp = registry().create("uncertainty", "maxprob")
    assert mp(torch.full((3, 1, 4, 1, 1), 0.25)).item() == pytest.approx(1.0)
    p = torch.tensor([0.7, 0.1, 0.1, 0.1]).view(1, 1, 4, 1, 1).expand(3, -1, -1, -1, -1)
    assert mp(p).item() == pytest.approx(0.3 / 0.75)


def test_losses_match_hand_values_on_a_two_voxel_case() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])).T.reshape(1, 4, 1, 2)
    labels = torch.tensor([[[0, 3]]])
    reg = registry()
    assert reg.create("loss", "ce")(logits, labels).item() == pytest.approx(-(math.log(0.7) + math.log(0.25)) / 2)
    brier = (0.3 ** 2 + 3 * 0.01) + (3 * 0.0625 + 0.75 ** 2)  # summed over the image's voxels, as the authors'
    assert reg.create("loss", "brier")(logits, labels).item() == pytest.approx(brier, rel=1e-5)
    two = torch.cat([logits, logits.flip(-1)])  # a batch of two images: the mean of their sums
    assert reg.create("loss", "brier")(two, torch.cat([labels, labels.flip(-1)])).item() == pytest.approx(brier,
                                                                                                          rel=1e-5)
    # soft-Dice per class c: (2 sum(R A) + 1) / (sum R + sum A + 1), averaged over the 4 classes
    a = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    r = np.array([[1, 0, 0, 0], [0, 0, 0, 1]])
    per = (2 * (a * r).sum(0) + 1) / (a.sum(0) + r.sum(0) + 1)
    assert reg.create("loss", "soft-dice")(logits, labels).item() == pytest.approx(1 - per.mean(), rel=1e-5)
    # dice-ce: CE + 1 - the mean over the foreground classes 1-3 of (2 sum(R A) + 1e-5) / (sum R + sum A + 1e-5);
    # here class 3 alone is present: (0.5 + 1e-5) / (1.35 + 1e-5); classes 1 and 2: 1e-5 / (0.35 + 1e-5)
    fg = (2 * (a * r).sum(0)[1:] + 1e-5) / (a.sum(0)[1:] + r.sum(0)[1:] + 1e-5)
    assert fg[2] == pytest.approx(0.5 / 1.35, rel=1e-4)
    want = -(math.log(0.7) + math.log(0.25)) / 2 + 1 - fg.mean()
    assert reg.create("loss", "dice-ce")(logits, labels).item() == pytest.approx(want, rel=1e-5)


def test_threshold_detector_picks_the_f1_best_cut_and_maps_it_to_one_half(tmp_path) -> None:
    from uqbench.api import Context, Profile

    det = registry().create("detector", "threshold")
    ex = tiny_examples()
    det.fit(ex, Context(profile=Profile.QUICK, device="cpu", seed=0, workdir=tmp_path))
    assert 0 < det.threshold < 1
    probe = ex[0]
    p = det.predict(probe)
    from uqbench.protocol.patches import patch_max, patch_mean

    flagged, mean_u = p > 0.5, patch_mean(probe.uncertainty)
    assert np.array_equal(flagged, mean_u > det.threshold)
    truth = patch_max(probe.failures) > 0
    assert (flagged & truth).sum() / truth.sum() > 0.5  # it finds most planted failure patches
