"""The paper's detection network: architecture, patch-grid alignment of crops and targets, the test-time
crop box, Eq. 6's weight, and that it learns to find planted failures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from uqbench import Context, DetectorExample, Profile
from uqbench.protocol.detection import average_precision
from uqbench.protocol.patches import patch_max
from uqbench.registry import registry
from uqbench.testing import tiny_examples
from uqbench_plugins.detectors import sresnet


def test_sresnet_has_the_papers_layers_and_parameter_count() -> None:
    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + 2 * cout  # no bias; batch norm weight and bias

    def block(cin: int, cout: int) -> int:
        return conv(cin, cout, 3) + conv(cout, cout, 3) + conv(cin, cout, 1)

    by_hand = (conv(2, 16, 7) + conv(16, 32, 3) + block(32, 32) + block(32, 64) + block(64, 128)
               + (128 * 128 + 128) * 2 + 128 * 2 + 2)
    net = sresnet.SResNet()
    assert sum(p.numel() for p in net.parameters()) == by_hand == 347_074
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in net.modules()) == 5


@pytest.mark.parametrize("shape", [(80, 80), (96, 112), (160, 88)])
def test_each_output_cell_scores_one_8x8_patch(shape: tuple[int, int]) -> None:
    out = sresnet.SResNet(width=0.25).eval()(torch.rand(2, 2, *shape))
    assert out.shape == (2, 2, shape[0] // 8, shape[1] // 8)


def test_positive_weight_is_the_ratio_of_negative_to_positive_patch_shares() -> None:
    a, b = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)
    a[0, :4] = 1  # 4 failing patches of 200
    assert sresnet.positive_weight([a, b]) == pytest.approx(196 / 4)
    assert sresnet.positive_weight([b]) == 0.0


def test_weighted_loss_weights_failing_patches_by_w_pos_hand_computed() -> None:
    logits = torch.zeros(1, 2, 1, 2)  # p = 0.5 everywhere: each patch's cross-entropy is ln 2
    targets = torch.tensor([[[1, 0]]])
    assert sresnet.weighted_loss(logits, targets, 3.0).item() == pytest.approx((3 + 1) * np.log(2) / 2)


def test_penalised_loss_is_the_authors_ce_plus_soft_counts_hand_computed() -> None:
    """utils/detection/trainers.py get_loss: NLL mean + 1.2 * sum(p0 * y) / B + 0.085 * sum(p1 * (1 - y)) / B."""
    logits = torch.zeros(2, 2, 2, 2)  # 2 crops of 4 patches, p = 0.5 everywhere
    targets = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]]])  # 3 failing patches, 5 not
    expected = np.log(2) + 1.2 * 0.5 * 3 / 2 + 0.085 * 0.5 * 5 / 2
    assert sresnet.penalised_loss(logits, targets, (1.2, 0.085)).item() == pytest.approx(expected)
    one = torch.tensor([0.0, np.log(3)]).reshape(1, 2, 1, 1)  # p(failure) = 0.75
    assert sresnet.penalised_loss(one, torch.ones(1, 1, 1, dtype=torch.long), (1.2, 0.085)).item() == pytest.approx(
        -np.log(0.75) + 1.2 * 0.25)
    assert sresnet.penalised_loss(one, torch.zeros(1, 1, 1, dtype=torch.long), (1.2, 0.085)).item() == pytest.approx(
        -np.log(0.25) + 0.085 * 0.75)


@pytest.mark.parametrize(("name", "penalties"), [("sresnet", None), ("sresnet-fnfp:7", (1.2, 0.085))])
def test_each_sresnet_detector_trains_with_its_own_loss(name: str, penalties: tuple[float, float] | None,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[sresnet.DetectorRecipe] = []
    real = sresnet.train_network

    def spy(examples: list[DetectorExample], *, recipe: sresnet.DetectorRecipe, **kw: object) -> object:
        seen.append(recipe)
        return real(examples, recipe=replace(recipe, iterations=1, batch_size=2), **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sresnet, "train_network", spy)
    det = registry().create("detector", name)
    det.fit(tiny_examples(2), Context(profile=Profile.QUICK, device="cpu", seed=0, workdir=tmp_path))
    assert [r.penalties for r in seen] == [penalties]
    assert seen[0].iterations == (7 if ":" in name else sresnet.QUICK.iterations)


def _examples_with_uncertainty_equal_to_failures() -> list[DetectorExample]:
    out = []
    for ex in tiny_examples(6, seed=1):
        assert ex.failures is not None
        out.append(replace(ex, uncertainty=ex.failures.astype(np.float32)))
    return out


def test_training_crops_and_targets_stay_on_the_patch_grid_under_rotation() -> None:
    examples = _examples_with_uncertainty_equal_to_failures()
    inputs = [sresnet.padded_inputs(ex) for ex in examples]
    targets = [sresnet.patch_targets(ex, x.shape[1:]) for ex, x in zip(examples, inputs, strict=True)]
    recipe = replace(sresnet.QUICK, forced=1.0)
    xs, ts = sresnet.sample_crops(inputs, targets, 24, recipe=recipe, rng=np.random.default_rng(0))
    assert xs.shape == (24, 2, 80, 80) and ts.shape == (24, 10, 10)
    for x, t in zip(xs, ts, strict=True):  # channel 1 is the failure map itself
        assert np.array_equal(patch_max(x[1]) > 0, t > 0)
        assert t.any()  # forced crops all hold a failure


def test_crop_box_is_the_segmentation_box_grown_to_ten_patches_inside_the_grid() -> None:
    seg = np.zeros((200, 160), np.uint8)
    seg[50:130, 20:40] = 2  # patches rows 6..16, columns 2..4
    assert sresnet.crop_box(seg, (25, 20), 10) == (6, 17, 0, 10)  # columns grown to 10, clamped at 0
    assert sresnet.crop_box(np.zeros_like(seg), (25, 20), 10) == (7, 17, 5, 15)  # empty: centred
    seg[:] = 1
    assert sresnet.crop_box(seg, (25, 20), 10) == (0, 25, 0, 20)


def test_patches_outside_the_crop_box_are_not_flagged(tmp_path: Path) -> None:
    det = registry().create("detector", "sresnet:5")
    det.fit(tiny_examples(4), Context(profile=Profile.QUICK, device="cpu", seed=0, workdir=tmp_path))
    seg = np.zeros((200, 120), np.uint8)
    seg[100:120, 60:80] = 3
    ex = DetectorExample(image=np.random.rand(200, 120).astype(np.float32), uncertainty=np.ones((200, 120), np.float32),
                         segmentation=seg, failures=None)
    p = det.predict(ex)
    y0, y1, x0, x1 = sresnet.crop_box(seg, (25, 15), 10)
    assert p.shape == (25, 15) and p[y0:y1, x0:x1].min() > 0
    inside = np.zeros(p.shape, bool)
    inside[y0:y1, x0:x1] = True
    assert (p[~inside] == 0).all()


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["sresnet", "sresnet-fnfp"])
def test_sresnet_learns_to_find_planted_failures(name: str, tmp_path: Path) -> None:
    det = registry().create("detector", f"{name}:150")
    det.fit(tiny_examples(16, seed=2), Context(profile=Profile.QUICK, device="cpu", seed=0, workdir=tmp_path))
    held_out = tiny_examples(8, seed=3)
    scores = np.concatenate([det.predict(replace(ex, failures=None)).ravel() for ex in held_out])
    truth = np.concatenate([(patch_max(ex.failures) > 0).ravel() for ex in held_out if ex.failures is not None])
    assert average_precision(scores, truth) > 0.5 > 4 * truth.mean()  # chance would be the base rate


def test_an_interrupted_detector_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    examples = tiny_examples(4)
    recipe = replace(sresnet.QUICK, iterations=6, batch_size=4, width=0.25)
    def fit(recipe: sresnet.DetectorRecipe, checkpoint: Path) -> torch.nn.Module:
        return sresnet.train_network(examples, recipe=recipe, device="cpu", seed=0, checkpoint=checkpoint)[0]

    straight = fit(recipe, tmp_path / "a.pt")
    fit(replace(recipe, iterations=3), tmp_path / "b.pt")  # "interrupted"
    resumed = fit(recipe, tmp_path / "b.pt")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_bad_step_count_is_a_usage_error() -> None:
    from uqbench.errors import UsageError

    with pytest.raises(UsageError, match="sresnet:N: N must be a positive integer, got 'many'"):
        registry().create("detector", "sresnet:many")
    with pytest.raises(UsageError, match="sresnet-fnfp:N: N must be a positive integer, got '0'"):
        registry().create("detector", "sresnet-fnfp:0")


@pytest.mark.parametrize("profile", list(Profile))
def test_every_profile_trains_sresnet_with_a_recipe_of_its_own_size(profile: Profile) -> None:
    recipe = sresnet.PROFILES[profile]
    assert recipe.crop % 8 == 0 and 0 < recipe.lr_decay_every <= recipe.iterations
    assert (recipe is sresnet.PAPER) == (profile is Profile.PAPER)
