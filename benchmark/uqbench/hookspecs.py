"""Every way to extend uqbench.

A plugin is a module named by an entry point in the ``uqbench`` group
(``[project.entry-points.uqbench]`` in its pyproject.toml). It implements any of
the hooks below with ``@uqbench.hookimpl`` and calls ``register`` once per
method it provides. What a registered class must look like is its kind's
contract in ``uqbench.api``. uqbench's own methods are registered the same way.

Evolution: hooks may gain arguments (old implementations keep working); none is
removed without a release that marks it ``warn_on_impl``; a new kind is a new
hook plus a new contract and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import pluggy

if TYPE_CHECKING:
    from uqbench.api import Dataset, Detector, Loss, Sampler, Segmenter, UncertaintyMap

PROJECT = "uqbench"
_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl: Callable[[_F], _F] = pluggy.HookimplMarker(PROJECT)

Register: TypeAlias = Callable[[type[_T]], None]
"""The callback a hook receives: ``register: Register[Segmenter]`` lets a type checker hold your class to its
contract."""


@hookspec
def register_segmenters(register: Register[Segmenter]) -> None:
    """Register segmenters: networks the harness trains and draws predictive samples from."""


@hookspec
def register_losses(register: Register[Loss]) -> None:
    """Register training losses: (logits, labels) -> scalar."""


@hookspec
def register_samplers(register: Register[Sampler]) -> None:
    """Register samplers: how predictive samples are drawn from a fold's trained model(s)."""


@hookspec
def register_uncertainty_maps(register: Register[UncertaintyMap]) -> None:
    """Register uncertainty maps: softmax samples -> voxel map in [0, 1]."""


@hookspec
def register_detectors(register: Register[Detector]) -> None:
    """Register failure detectors: slice, uncertainty, segmentation -> failure probability per 8x8 patch."""


@hookspec
def register_datasets(register: Register[Dataset]) -> None:
    """Register dataset readers that yield cases in their original geometry."""
