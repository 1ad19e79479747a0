"""Device and precision resolution, bf16 autocast on CPU giving the fp32 results to bf16 accuracy, and the host
settings: channels-last tensors, a heap that keeps freed activations mapped, denormals flushed."""

from __future__ import annotations

import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from uqbench import devices
from uqbench.api import Profile
from uqbench.errors import UsageError
from uqbench.infer.sampling import Drawer, predict_volume
from uqbench.registry import registry
from uqbench.train.loop import load_trained, train


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


def _mixes(m: torch.nn.Module) -> bool:
    """A convolution whose weights' layouts differ (a single input channel or a 1x1 kernel is the same in both)."""
    return isinstance(m, torch.nn.Conv2d) and m.in_channels > 1 and m.kernel_size[0] > 1


def test_training_returns_and_stores_a_channels_last_network_unless_a_benchmark_asks_otherwise(tmp_path: Path) -> None:
    seg = registry().create("segmenter", "drn")
    recipe = replace(seg.recipe(Profile.QUICK), iterations=2, batch_size=2, patch_size=32)
    slices = [(np.random.default_rng(i).random((40, 40)).astype(np.float32), np.ones((40, 40), np.uint8))
              for i in range(2)]
    loss = registry().create("loss", "ce")
    convs = []
    for first in (False, True):
        model = train(segmenter=seg, recipe=recipe, loss=loss, slices=slices, device="cpu", seed=0,
                      checkpoint=tmp_path / f"{first}.pt", channels_first=first)
        convs.append([m.weight for m in model.modules() if _mixes(m)])
    loaded = load_trained(segmenter=seg, recipe=recipe, checkpoint=tmp_path / "True.pt", device="cpu")
    convs.append([m.weight for m in loaded.modules() if _mixes(m)])
    last, first, reloaded = ([w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                              for w in ws] for ws in convs)
    assert all(last) and not any(first) and all(reloaded)  # a stored network is loaded channels-last


def test_channels_last_converts_a_network_in_place_and_back() -> None:
    net = torch.nn.Conv2d(2, 3, 3)  # weight [3, 2, 3, 3]
    assert devices.channels_last(net) is net and net.weight.stride() == (18, 1, 6, 2)
    assert devices.channels_last(net, enabled=False).weight.stride() == (18, 9, 3, 1)


def test_prepare_host_flushes_denormals() -> None:
    try:
        devices.prepare_host()
        assert torch.tensor([1e-40], dtype=torch.float32).item() == 0.0  # a float32 denormal, flushed
    finally:
        torch.set_flush_denormal(False)


# Allocates, fills and frees a block of argv[1] MiB with the C library's malloc after the run's host settings, and
# prints the page faults each cycle costs once the first has run (glibc's defaults: about 200 for 16 MiB).
FAULTS_PER_CYCLE = """
import ctypes, resource, sys
from uqbench.devices import prepare_host

prepare_host()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def cycle(size=int(sys.argv[1]) << 20):
    block = libc.malloc(size)
    libc.memset(block, 1, size)
    libc.free(block)

cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap settings are glibc's")
@pytest.mark.parametrize("mib", [16, 64])
def test_the_run_heap_reuses_a_freed_block_without_faulting_it_in_again(mib: int) -> None:
    # 16 MiB is 4,096 pages: a block given a mapping of its own faults every one of them in at each cycle, as it
    # did when only the pad was set (glibc then kept its 128 KiB mmap threshold). 64 MiB lies above the largest
    # threshold glibc accepts (32 MiB), so only a heap that maps no block at all keeps it: the run's heap, none
    assert devices.tune_malloc()  # glibc accepted both values
    faults = float(subprocess.run([sys.executable, "-c", FAULTS_PER_CYCLE, str(mib)], capture_output=True,
                                  text=True, check=True).stdout)
    assert faults < 64
