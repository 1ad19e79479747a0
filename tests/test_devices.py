"""Device and precision resolution, and bf16 autocast on CPU giving the fp32 results to bf16 accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uqbench import devices
from uqbench.errors import UsageError
from uqbench.infer.sampling import Drawer, predict_volume
from uqbench.registry import registry


@pytest.mark.parametrize(("flags", "expected"), [
    ({}, "fp32"),
    ({"avx512_bf16": True}, "bf16"),
    ({"amx_bf16": True}, "bf16"),
])
def test_auto_precision_is_bf16_only_on_cpus_that_compute_it_natively(
        monkeypatch: pytest.MonkeyPatch, flags: dict[str, bool], expected: str) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True} | flags)
    assert devices.resolve_precision("auto", "cpu") == expected


def test_explicit_precision_is_kept_and_an_unknown_one_is_refused() -> None:
    assert devices.resolve_precision("bf16", "cpu") == "bf16"  # forced: emulated where not native
    assert devices.resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(UsageError, match="--precision 'fp16': expected one of auto, fp32, bf16"):
        devices.resolve_precision("fp16", "cpu")


def test_bf16_inference_on_cpu_matches_fp32_to_bf16_accuracy() -> None:
    seg = registry().create("segmenter", "drn")
    torch.manual_seed(0)
    model = seg.build(in_channels=1, num_classes=4, dropout=0.1, width=0.125)
    image = np.random.default_rng(0).random((2, 40, 48)).astype(np.float32)
    umap = registry().create("uncertainty", "bmap")
    sampler = registry().create("sampler", "mc-dropout")
    p32, u32 = predict_volume(Drawer(sampler=sampler, models=[model], multiple=seg.size_multiple, precision="fp32"),
                              image, umap=umap, samples=3, seed=0)
    p16, u16 = predict_volume(Drawer(sampler=sampler, models=[model], multiple=seg.size_multiple, precision="bf16"),
                              image, umap=umap, samples=3, seed=0)
    assert p16.dtype == np.float32 and np.allclose(p16.sum(1), 1, atol=1e-5)
    assert 0 < np.abs(p16 - p32).max() < 0.05  # bf16 keeps 8 significant bits: close, but not identical
    assert np.abs(u16 - u32).max() < 0.05
