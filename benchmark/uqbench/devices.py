"""The device and numeric precision a run trains and predicts with, resolved once and recorded in its config.

bf16 autocast (float32 weights, bf16 convolutions, the loss and softmax in float32) is the default where
the hardware computes in bf16 natively: CUDA GPUs that support it, and CPUs with AVX512-BF16 or AMX. On
other CPUs it is emulated and slower, so ``auto`` keeps float32 there; ``--precision bf16`` still forces it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal, cast

from uqbench.api import Profile
from uqbench.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16")
Precision = Literal["fp32", "bf16"]


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


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict[str, str | None]:
    """What config.json records beside the resolved precision: the numbers of a run depend on both."""
    import torch

    return {"cpu": cpu_model(), "cuda": torch.cuda.get_device_name() if device == "cuda" else None}


def native_bf16(device: str) -> bool:
    """Whether ``device`` (cpu or cuda) computes bf16 in hardware."""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(requested: str, device: str) -> Precision:
    """``auto`` -> bf16 where native (see the module docstring), else fp32; UsageError for other values."""
    if requested not in PRECISIONS:
        raise UsageError(f"--precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "bf16" if native_bf16(device) else "fp32"
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
