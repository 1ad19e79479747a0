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


@pytest.mark.parametrize(("vendor", "flags", "expected"), [
    ("AuthenticAMD", {}, "fp32"),
    ("GenuineIntel", {}, "fp32"),
    ("AuthenticAMD", {"avx512_bf16": True}, "bf16"),
    ("GenuineIntel", {"avx512_bf16": True}, "fp32"),  # native, yet slower than fp32 without AMX
    ("GenuineIntel", {"avx512_bf16": True, "amx_bf16": True}, "bf16"),
    ("", {"amx_bf16": True}, "bf16"),
])
def test_auto_precision_is_bf16_only_on_cpus_where_it_is_the_faster(
        monkeypatch: pytest.MonkeyPatch, vendor: str, flags: dict[str, bool], expected: str) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True} | flags)
    monkeypatch.setattr(devices, "cpu_vendor", lambda: vendor)
    assert devices.resolve_precision("auto", "cpu") == expected


def test_cpu_vendor_and_model_are_read_from_cpuinfo_by_their_exact_field_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9B14\n")
    monkeypatch.setattr(devices, "CPUINFO", info)
    assert (devices.cpu_vendor(), devices.cpu_model()) == ("AuthenticAMD", "AMD EPYC 9B14")
    monkeypatch.setattr(devices, "CPUINFO", tmp_path / "absent")
    assert devices.cpu_vendor() == ""


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


_STRIDED_LOOP = """
import torch
from uqbench import devices
torch.manual_seed(0)
torch.set_num_threads(3)
conv = devices.channels_last(torch.nn.Conv2d({ic}, {oc}, 1, stride=2, bias=False))
for _ in range(50):
    x = torch.randn(8, {ic}, 48, 48, requires_grad=True).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled={bf16}):
        y = conv(x)
    y.float().sum().backward()
"""


@pytest.mark.parametrize(("ic", "oc", "bf16"), [(4, 8, False), (8, 16, False), (8, 16, True), (12, 16, True)])
def test_few_channel_strided_pointwise_convolutions_train_on_channels_last_without_crashing(
        ic: int, oc: int, bf16: bool) -> None:
    # Unguarded, oneDNN's kernel (uxlfoundation/oneDNN#6035) crashed every one of these within 50 passes on a
    # 2-core AMD EPYC with AVX512-BF16 (bf16 at three threads): a process of its own, so a crash fails the test.
    code = _STRIDED_LOOP.format(ic=ic, oc=oc, bf16=bf16)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_strided_pointwise_convolution_at_unit_stride_computes_the_same_function_and_gradients() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 1, stride=(2, 3))
    ref = torch.nn.Conv2d(4, 8, 1, stride=(2, 3)).double()
    ref.load_state_dict(conv.state_dict())
    devices.channels_last(conv)
    devices.channels_last(conv)  # a second conversion does not subsample twice
    x = torch.randn(2, 4, 31, 29)
    xs = [x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(), x.double().requires_grad_()]
    out, want = conv(xs[0]), ref(xs[1])
    assert out.shape == want.shape == (2, 8, 16, 10) and out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn(out.shape)
    out.backward(g), want.backward(g.double())
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(conv.weight.grad.double(), ref.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xs[0].grad.double(), xs[1].grad, rtol=1e-5, atol=1e-6)
    assert set(conv.state_dict()) == {"weight", "bias"}  # stored networks load unchanged


def test_only_few_channel_unpadded_strided_pointwise_convolutions_change_stride() -> None:
    kept = [torch.nn.Conv2d(16, 32, 1, stride=2), torch.nn.Conv2d(4, 8, 3, stride=2, padding=1),
            torch.nn.Conv2d(4, 8, 1, stride=2, padding=1), torch.nn.Conv2d(4, 8, 1)]
    for conv in kept:
        assert devices.channels_last(conv).stride == torch.nn.Conv2d(1, 1, 1, stride=conv.stride).stride
    assert devices.channels_last(torch.nn.Conv2d(4, 8, 1, stride=2), enabled=False).stride == (2, 2)
    drn = registry().create("segmenter", "drn")
    for profile in (Profile.QUICK, Profile.CPU):
        net = drn.build(in_channels=1, num_classes=4, dropout=0.0, width=drn.recipe(profile).width).eval()
        x = torch.randn(1, 1, 64, 64)
        before = net(x)
        devices.channels_last(net)
        few = [m.stride for m in net.modules()
               if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.in_channels < 16]
        assert few and all(stride == (1, 1) for stride in few)  # drn's strided shortcuts at these widths
        torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last)), before, rtol=1e-4, atol=1e-5)


def test_the_train_stage_counts_the_convolutions_computed_at_unit_stride_only_where_there_are_some() -> None:
    reg = registry()
    drn, unet, dn = (reg.create("segmenter", n) for n in ("drn", "unet", "dn"))
    state = torch.random.get_rng_state()
    counts = {(name, p): devices.unit_stride_count(seg, seg.recipe(p), "cpu")
              for name, seg in (("drn", drn), ("unet", unet), ("dn", dn)) for p in Profile}
    assert torch.equal(torch.random.get_rng_state(), state)  # building the net to count draws nothing
    assert counts[("drn", Profile.QUICK)] == 2 and counts[("drn", Profile.CPU)] == 1
    assert counts[("drn", Profile.PAPER)] == 0 and not any(c for (n, _), c in counts.items() if n != "drn")
    assert devices.unit_stride_count(drn, drn.recipe(Profile.QUICK), "cuda") == 0


def test_prepare_host_flushes_denormals() -> None:
    try:
        devices.prepare_host()
        assert torch.tensor([1e-40], dtype=torch.float32).item() == 0.0  # a float32 denormal, flushed
    finally:
        torch.set_flush_denormal(False)


def _libtorch_read_only_kib() -> list[tuple[int, int]]:
    """(size, resident) in KiB of each read-only data mapping of libtorch_cpu, from /proc/self/smaps."""
    found: list[tuple[int, int]] = []
    ours, size = False, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].endswith(":"):  # a mapping's header: range, perms, offset, dev, inode[, path]
            ours = fields[1] == "r--p" and len(fields) >= 6 and Path(fields[5]).name == devices.LIBTORCH_CPU
        elif ours and fields[0] == "Size:":
            size = int(fields[1])
        elif ours and fields[0] == "Rss:":
            found.append((size, int(fields[1])))
    return found


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_prepare_host_maps_every_page_of_libtorchs_read_only_data() -> None:
    try:
        devices.prepare_host(heap=False)
        mappings = _libtorch_read_only_kib()
        assert mappings, "libtorch_cpu's read-only data not found in /proc/self/smaps"
        assert all(resident == size for size, resident in mappings), mappings
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
