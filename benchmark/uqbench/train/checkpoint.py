"""Resumable training state: what a training loop writes at intervals so that an interrupted run continues
where it stopped and ends with the same weights (the harness's loop and trained detectors both use it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uqbench.files import write_atomic

if TYPE_CHECKING:  # torch is imported when used, so importing this module (uqbench.plugin does) stays cheap
    import torch


def save(path: Path, *, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, rng: np.random.Generator,
         step: int, extra: dict[str, Any] | None = None) -> None:
    """Write weights, optimiser, schedule, both random generators and the step, atomically (a crash while
    writing leaves the previous checkpoint)."""
    import torch

    save_torch({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step, **(extra or {})},
               path)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` through memory, then an atomic write: a full disk is an OSError naming the file (torch's
    own file writer reports it as a cryptic RuntimeError, which would blame the method) and a crash while
    writing leaves whatever was at ``path`` before."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def resume(path: Path, *, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, rng: np.random.Generator,
           device: str) -> dict[str, Any]:
    """Restore what :func:`save` wrote into the given objects; returns the whole state (``step`` and any
    extras), or ``{"step": 0}`` when there is no checkpoint yet."""
    import torch

    if not path.is_file():
        return {"step": 0}
    state = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    return state
