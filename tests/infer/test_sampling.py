"""Inference: running statistics equal the stacked samples, batching passes changes nothing, and each built-in
sampler draws exactly the passes it documents (checked against passes made by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from uqbench.api import cpu_inputs_per_call_of, inputs_per_call
from uqbench.bench.speed import other_chunks
from uqbench.errors import MethodFault
from uqbench.infer.sampling import Drawer, mc_mode, moments, predict_volume, sample_volume
from uqbench.registry import registry


def _drawer(models: list[nn.Module], *, sampler: str = "mc-dropout", multiple: int = 8, per_pass: int | None = None,
            precision: str = "fp32") -> Drawer:
    return Drawer(sampler=registry().create("sampler", sampler), models=models, multiple=multiple,
                  per_pass=per_pass, precision=precision)


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
        a = predict_volume(_drawer([model], per_pass=1), image, umap=umap, samples=t, seed=0)
        b = predict_volume(_drawer([model], per_pass=t), image, umap=umap, samples=t, seed=0)
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
    from uqbench.infer.sampling import _Accumulator

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
        return predict_volume(_drawer([model]), image, umap=umap, samples=1, seed=seed)[0]

    assert not np.allclose(mean("bmap", 0), mean("bmap", 1))
    np.testing.assert_array_equal(mean("emap", 0), mean("emap", 1))


def _tiny(seed: int, dropout: float = 0.3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(dropout),
                         nn.Conv2d(6, 4, 3, padding=1))


IMAGE = np.random.default_rng(4).random((2, 6, 10)).astype(np.float32)  # oblong: quarter turns change its shape


def _drawn(drawer: Drawer, *, one_pass: bool, samples: int, seed: int = 7) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat(list(drawer.passes(IMAGE, one_pass=one_pass, samples=samples, seed=seed)))


def test_mc_dropout_samples_are_seeded_stochastic_passes_made_by_hand() -> None:
    """What the main job computed before samplers were a plugin kind: seed, dropout on, batch norm frozen, T
    passes one after another, softmax in float32, the padding cropped."""
    model = _tiny(0)
    drawn = _drawn(_drawer([model], multiple=1), one_pass=False, samples=3)
    x = torch.from_numpy(IMAGE[:, None])
    torch.manual_seed(7)
    mc_mode(model)
    with torch.no_grad():
        by_hand = torch.stack([model(x).softmax(1) for _ in range(3)])
    assert torch.equal(drawn, by_hand)
    model.eval()
    with torch.no_grad():
        assert torch.equal(_drawn(_drawer([model], multiple=1), one_pass=True, samples=1), model(x).softmax(1)[None])


def test_ensemble_samples_are_each_members_deterministic_pass_and_mc_passes_with_mc() -> None:
    models = [_tiny(m) for m in range(3)]
    x = torch.from_numpy(IMAGE[:, None])
    with torch.no_grad():
        by_hand = torch.stack([m.eval()(x).softmax(1) for m in models])
    for one_pass in (True, False):
        assert torch.equal(_drawn(_drawer(models, sampler="ensemble:3", multiple=1), one_pass=one_pass, samples=3),
                           by_hand)
    drawer = _drawer(models, sampler="ensemble:3:mc", multiple=1)
    assert drawer.sampler.count(4, one_pass=False) == 12 and drawer.sampler.count(4, one_pass=True) == 3
    mc = _drawn(drawer, one_pass=False, samples=12)
    torch.manual_seed(7)
    with torch.no_grad():
        by_hand_mc = torch.stack([mc_mode(m)(x).softmax(1) for m in models for _ in range(4)])
    assert torch.equal(mc, by_hand_mc)


def test_tta_samples_equal_predictions_of_hand_transformed_slices_turned_back() -> None:
    """Each of the 8 flips and quarter turns, made with numpy on the padded slice, predicted, and undone with
    numpy; the sampler's samples are these 8 (in its own order)."""
    model = _tiny(1).eval()
    padded = np.pad(IMAGE, ((0, 0), (0, 2), (0, 6)))  # to multiples of 8, at the bottom and right
    expected = []
    for turns in range(4):
        for flip in (False, True):
            img = np.rot90(padded[:, :, ::-1] if flip else padded, turns, axes=(1, 2))
            with torch.no_grad():
                p = model(torch.from_numpy(np.ascontiguousarray(img)[:, None])).softmax(1).numpy()
            back = np.rot90(p, -turns, axes=(2, 3))
            expected.append((back[:, :, :, ::-1] if flip else back)[:, :, :6, :10])
    drawn = _drawn(_drawer([model], sampler="tta"), one_pass=False, samples=8).numpy()
    assert drawn.shape == (8, 2, 4, 6, 10)
    matched = [min(range(8), key=lambda j: np.abs(d - expected[j]).max()) for d in drawn]
    assert sorted(matched) == list(range(8))
    for d, j in zip(drawn, matched, strict=True):
        np.testing.assert_allclose(d, expected[j], atol=1e-6)
    batched = _drawn(_drawer([model], sampler="tta", per_pass=4), one_pass=False, samples=8).numpy()
    np.testing.assert_allclose(batched, drawn, atol=1e-6)


class _Recorded(nn.Module):
    """A network that notes the batch size of every call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        out: torch.Tensor = self.model(x)
        return out


def test_chunked_calls_take_at_most_chunk_inputs_and_draw_the_passes_slice_by_slice() -> None:
    """Two slices, 3 MC passes in one group (6 inputs), at most 2 inputs a call: three calls; with one input a
    call, the samples equal passes made by hand one slice at a time (the dropout masks drawn in that order)."""
    recorded = _Recorded(_tiny(0))
    one = Drawer(sampler=registry().create("sampler", "mc-dropout"), models=[recorded], multiple=1, per_pass=3,
                 chunk=2)
    assert _drawn(one, one_pass=False, samples=3).shape == (3, 2, 4, 6, 10)
    assert recorded.sizes == [2, 2, 2]
    model = _tiny(0)
    drawn = _drawn(Drawer(sampler=registry().create("sampler", "mc-dropout"), models=[model], multiple=1, chunk=1),
                   one_pass=False, samples=3)
    x = torch.from_numpy(IMAGE[:, None])
    torch.manual_seed(7)
    mc_mode(model)
    with torch.no_grad():
        by_hand = torch.stack([torch.cat([model(x[i:i + 1]).softmax(1) for i in range(2)]) for _ in range(3)])
    assert torch.equal(drawn, by_hand)


def test_chunked_calls_do_not_change_the_deterministic_pass() -> None:
    model = _tiny(2)
    whole = _drawn(_drawer([model], multiple=1), one_pass=True, samples=1)
    for chunk in (1, 3):
        chunked = Drawer(sampler=registry().create("sampler", "mc-dropout"), models=[model], multiple=1, chunk=chunk)
        torch.testing.assert_close(_drawn(chunked, one_pass=True, samples=1), whole, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("odd", [0, -1, 1.5, True, "2"])
def test_cpu_inputs_per_call_must_be_a_positive_int(odd: object) -> None:
    class Odd:
        cpu_inputs_per_call = odd

    assert cpu_inputs_per_call_of(object()) is None
    with pytest.raises(ValueError, match="cpu_inputs_per_call must be a positive int"):
        cpu_inputs_per_call_of(Odd())


def test_the_inputs_per_call_declaration_holds_on_a_cpu_only() -> None:
    dn = registry().create("segmenter", "dn")
    assert inputs_per_call(dn, "cpu") == 1
    assert inputs_per_call(dn, "cuda") is None
    assert inputs_per_call(registry().create("segmenter", "drn"), "cpu") is None


def test_bench_infer_times_other_inputs_per_call_only_where_a_run_splits_calls() -> None:
    assert other_chunks("cpu", 1) == [None, 2, 4]
    assert other_chunks("cpu", None) == [1, 2, 4]
    assert other_chunks("cuda", None) == []  # a CUDA run never splits a call, so no variant would be one it uses


class _Broken:
    """A sampler that breaks the contract in the way it is told to."""

    name = "broken"
    members = 1

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def count(self, requested: int, *, one_pass: bool) -> int:
        return 2

    def draw(self, forward, x, *, samples, one_pass, group):  # type: ignore[no-untyped-def]
        p = forward(x)[None]
        if self.fault == "shape":
            yield p[..., 1:]
        elif self.fault == "nan":
            yield p * float("nan")
        elif self.fault == "sum":
            yield p * 0.5
        elif self.fault == "count":
            yield p
        else:
            yield from (p, p, p)


@pytest.mark.parametrize(("fault", "message"), [("shape", "shape"), ("nan", "NaN"), ("sum", "not probabilities"),
                                                ("count", "yielded 1 samples"), ("extra", "yielded 3 samples")])
def test_samples_that_break_the_contract_are_blamed_on_the_sampler(fault: str, message: str) -> None:
    drawer = Drawer(sampler=_Broken(fault), models=[_tiny(0)], multiple=1)
    with pytest.raises(MethodFault, match=message) as caught:
        sample_volume(drawer, IMAGE, one_pass=False, samples=2, seed=0)
    assert caught.value.kind == "sampler"


def test_a_network_that_fails_is_blamed_on_the_segmenter_whichever_sampler_called_it() -> None:
    class Fails(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("out of cheese")

    with pytest.raises(MethodFault, match="out of cheese") as caught:
        sample_volume(_drawer([Fails()], sampler="tta"), IMAGE, one_pass=False, samples=8, seed=0)
    assert caught.value.kind == "segmenter"
