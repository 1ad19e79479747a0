"""The device and numeric precision a run trains and predicts with, resolved once and recorded in its config,
and the host settings every run and benchmark starts with.

bf16 autocast (float32 weights, bf16 convolutions, the loss and softmax in float32) is the default where
the hardware computes bf16 faster than float32: CUDA GPUs that support it, CPUs with AMX, and other vendors' CPUs
with AVX512-BF16 (on a 2-core AMD EPYC without AMX, dn trains 1.7-1.8 times faster in bf16: docs/measurements.md).
An Intel CPU with AVX512-BF16 but no AMX computes bf16 natively yet slower: on a 2-core Intel Xeon whose VM hides
its AMX every `cpu` recipe trains 1.2-1.4 times faster in fp32, so ``auto`` keeps float32 there, as on CPUs that
emulate bf16. ``--precision bf16`` still forces it; ``uqbench bench train --other-precision`` times both on a CPU.

Networks are channels-last on every device (:func:`channels_last`), so their activations are too: oneDNN's
CPU convolutions, like cuDNN's, run in that layout, and a channels-first tensor is reordered before and after
each of them. (The harness's inputs have one channel, the same in either layout.) On the 2-core
Xeon of docs/cpu-recipes.md (bf16, `uqbench bench infer` and `bench train --channels-first`, side by side)
this made dn's T = 10 prediction 2.9 times and its training step 1.4 times faster, drn's and unet's 1-7 percent
(docs/measurements.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeGuard, cast

from uqbench.api import Profile, Recipe, Segmenter, network_of
from uqbench.errors import UsageError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
Precision = Literal["fp32", "bf16"]

# glibc's mallopt parameters (malloc.h) and the run's values for them: see prepare_host.
M_TOP_PAD, M_MMAP_MAX = -2, -4
RUN_TOP_PAD, RUN_MMAP_MAX = 1 << 30, 0
LIBTORCH_CPU = "libtorch_cpu.so"  # the library whose read-only data map_torch_constants reads (Linux's name)


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda when available, else cpu; UsageError for an unknown or unavailable device."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if requested not in ("cpu", "cuda"):
        raise UsageError(f"--device {requested!r}: expected auto, cpu or cuda")
    return requested


CPUINFO = Path("/proc/cpuinfo")  # Linux's; elsewhere absent


def _cpuinfo(field: str) -> str:
    """The first value of ``field`` in CPUINFO, else ''."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.partition(":")[0].strip() == field:
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def machine(device: str) -> dict[str, str | None]:
    """What config.json records beside the resolved precision: the numbers of a run depend on both."""
    import torch

    return {"cpu": cpu_model(), "cuda": torch.cuda.get_device_name() if device == "cuda" else None}


def cpu_vendor() -> str:
    """The CPU's vendor (Linux: /proc/cpuinfo's vendor_id, e.g. GenuineIntel), else ''."""
    return _cpuinfo("vendor_id")


def fast_bf16(device: str) -> bool:
    """Whether bf16 autocast is the faster precision on ``device``: where it is native, bar Intel CPUs without AMX
    (the module docstring says why)."""
    import torch

    return native_bf16(device) and (device == "cuda" or bool(torch.cpu.get_capabilities().get("amx_bf16"))
                                    or cpu_vendor() != "GenuineIntel")


def native_bf16(device: str) -> bool:
    """Whether ``device`` (cpu or cuda) computes bf16 in hardware."""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(requested: str, device: str) -> Precision:
    """``auto`` -> bf16 where it is faster (see the module docstring), else fp32; UsageError for other values."""
    if requested not in PRECISIONS:
        raise UsageError(f"--precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    if requested == "bf16" and device == "cuda" and not native_bf16(device):
        raise UsageError("--precision bf16: this CUDA device has no bf16 support (use fp32 or auto)")
    return cast(Precision, requested)


def resolve_profile(requested: str | None, device: str) -> Profile:
    """The named recipe profile; by default ``paper`` on CUDA and ``quick`` elsewhere."""
    if requested is None:
        return Profile.PAPER if device == "cuda" else Profile.QUICK
    try:
        return Profile(requested)
    except ValueError:
        raise UsageError(f"--profile {requested!r}: expected one of {', '.join(p.value for p in Profile)}") from None


def autocast(device: str, precision: str) -> AbstractContextManager[object]:
    """The autocast context of a forward pass at ``precision`` (fp32: a no-op)."""
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def channels_last(model: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """The network, converted in place to the channels-last memory format (the module docstring says why), its
    few-channel strided 1x1 convolutions on a CPU computed at unit stride (``unit_stride``); with ``enabled``
    False, to channels-first, the layout benchmarks time beside it."""
    import torch

    model = model.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
    if enabled:
        for module in model.modules():
            if _strided_pointwise(module) and module.weight.device.type == "cpu":
                unit_stride(module)
    return model


# oneDNN's channels-last kernel for the weight gradient of a 1x1 convolution with stride > 1 and fewer input
# channels than its block (16 on AVX-512, 8 on AVX2) writes past its workspace (uxlfoundation/oneDNN#6035, open
# in PyTorch 2.14's oneDNN 3.12): by CPU, precision and thread count it crashes, hangs or returns wrong gradients.
# drn's strided shortcuts at the quick and cpu profiles' widths have 4 and 8 (docs/measurements.md).
FEW_CHANNELS = 16


def _strided_pointwise(module: torch.nn.Module) -> TypeGuard[torch.nn.Conv2d]:
    """Whether ``module`` is a 1x1 convolution, unpadded, with stride > 1 and fewer than FEW_CHANNELS inputs."""
    import torch

    return (isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1)
            and module.padding in ((0, 0), "valid") and max(module.stride) > 1 and module.in_channels < FEW_CHANNELS)


def unit_stride_count(segmenter: Segmenter, recipe: Recipe, device: str) -> int:
    """How many of the segmenter's convolutions ``channels_last`` computes at unit stride on ``device`` (0 on CUDA):
    the train stage is keyed with it, so models trained before the guard, by the faulty kernel, are not served.
    The network is built to count them, with torch's random state left as it was."""
    if device != "cpu":
        return 0
    import torch

    with torch.random.fork_rng(devices=[]):
        net = network_of(segmenter, recipe)
    return sum(_strided_pointwise(m) for m in net.modules())


def unit_stride(conv: torch.nn.Conv2d) -> None:
    """Make ``conv`` (1x1, unpadded) read its input subsampled by its stride and convolve at stride 1: the same
    function, and the same weights and state dict, without the strided kernel (oneDNN copies the input so itself
    before a unit-stride kernel: on the CPU this was found on, the two agree bit for bit where the strided one
    works)."""
    step = tuple(conv.stride)

    def subsample(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (args[0][:, :, ::step[0], ::step[1]], *args[1:])

    conv.register_forward_pre_hook(subsample)
    conv.stride = (1, 1)


def tune_malloc() -> bool:
    """Set glibc malloc's M_TOP_PAD (memory kept beyond the heap's top when it grows or is trimmed) and
    M_MMAP_MAX (how many blocks may have a mapping of their own; the run's 0: none) to the run's values; False
    where the C library is not glibc or it refused a value (then nothing more is changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc's own symbol: another libc's mallopt may differ
        return False
    return bool(libc.mallopt(M_MMAP_MAX, RUN_MMAP_MAX)) and bool(libc.mallopt(M_TOP_PAD, RUN_TOP_PAD))


def map_torch_constants() -> int:
    """Read one byte of every page of libtorch_cpu's read-only data, so that all of it is mapped into the
    process; returns the number of pages (0 where /proc/self/maps or the library is not there).

    Some of SLEEF's vector functions in libtorch_cpu (expm1, behind ELU) merge a constant in with a masked load
    whose mask is empty for ordinary inputs (an all-false compare against a special value). An empty load does not
    fault its page in, and on the 2-core AMD EPYC of docs/measurements.md every one that meets an unmapped page
    is slow, for as long as the page stays unmapped: a bf16 ELU of 8 x 32 x 192² took 46 ms, 11 ms once the pages
    were mapped (gdb put the time in `_ZGVeN16v_Sleef_expm1f_u10`, and faulting in the one page that function's
    masked broadcast reads took 94 ms to 26 on one thread). The results are the same bits; only the pace changes.
    About 15,600 pages (61 MiB of the page cache, shared with every process using the library) take under 10 ms.
    """
    import mmap

    import numpy as np
    import torch  # noqa: F401  (loads the library, wherever the installation put it)

    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return 0
    pages = 0
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[1] != "r--p" or Path(fields[5]).name != LIBTORCH_CPU:
            continue
        start, end = (int(v, 16) for v in fields[0].split("-"))
        view = np.frombuffer(memoryview((ctypes.c_char * (end - start)).from_address(start)), dtype=np.uint8)
        int(view[::mmap.PAGESIZE].max())  # one read a page faults the page in
        pages += (end - start) // mmap.PAGESIZE
    return pages


def prepare_host(*, heap: bool = True, constants: bool = True) -> None:
    """What every run and benchmark sets before its first tensor: denormal floats flushed to zero (they slow
    CPU training several-fold), with ``constants`` libtorch's constants mapped (:func:`map_torch_constants`) and,
    with glibc and ``heap``, a heap that keeps freed activations mapped.

    A forward pass frees and reallocates hundreds of MiB of activations. glibc gives a block above its mmap
    threshold a mapping of its own and unmaps it when freed, and trims the heap's free top beyond a small pad, so
    each pass faulted its memory in again page by page: dn's T = 10 prediction took 9.6 s a volume with glibc's
    defaults, 5.3 s with a 1 GiB pad (``uqbench bench infer`` with and without ``--default-heap``). The
    threshold cannot be raised past 32 MiB, and a real volume's activations in dn are larger (ACDC's largest,
    18 slices of 339 x 380 voxels on the grid with their context, makes a 32-channel map of 142 MiB in bf16),
    so with the pad and that threshold they were still mapped anew at every call: 31 % of the CPU time of
    ``dn:authors``'s fold-0 prediction was the kernel's. So no block gets a mapping of its own: every one is cut
    from the padded heap, and a freed one is reused. That prediction then took 320 s against 541, its results
    byte for byte the same; its peak memory rose from 2.6 to 5.2 GiB, as freed blocks stay in the heap
    (docs/measurements.md)."""
    import torch

    torch.set_flush_denormal(True)
    if constants:
        map_torch_constants()
    if heap:
        tune_malloc()
