"""The six kinds of method, in one table: for each, its name (also the CLI flag and the registry key), the
hook that registers it, the word messages use for it, and its contract in ``uqbench.api``.

What a registered class must define besides ``name`` is read from the contract itself (the members the
Protocol declares), so a contract and the registry's check of it cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from uqbench.api import Dataset, Detector, Loss, Sampler, Segmenter, UncertaintyMap
from uqbench.errors import UsageError

T = TypeVar("T")


def contract_members(contract: type) -> tuple[str, ...]:
    """The attributes and methods a Protocol declares in its own body, in order: its annotations, then its
    properties (the class attributes), public methods and ``__call__``."""
    names = list(getattr(contract, "__annotations__", {}))
    names += [n for n, v in vars(contract).items()
              if (isinstance(v, property) or callable(v)) and (not n.startswith("_") or n == "__call__")]
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True, kw_only=True)
class Kind(Generic[T]):
    """One kind of method; ``Kind[Segmenter]`` makes ``registry().create(SEGMENTER, ...)`` a ``Segmenter``."""

    name: str  # "uncertainty": CLI flag, registry key, `uqbench plugins --kind` value
    hook: str  # "register_uncertainty_maps", in uqbench.hookspecs
    label: str  # "uncertainty map", in messages
    contract: type  # the Protocol in uqbench.api (a Protocol cannot be a type[T] argument, hence plain type)

    @property
    def required(self) -> tuple[str, ...]:
        """What a registered class must define besides ``name``."""
        return tuple(m for m in contract_members(self.contract) if m != "name")

    def __str__(self) -> str:
        return self.name


SEGMENTER: Kind[Segmenter] = Kind(name="segmenter", hook="register_segmenters", label="segmenter", contract=Segmenter)
LOSS: Kind[Loss] = Kind(name="loss", hook="register_losses", label="loss", contract=Loss)
SAMPLER: Kind[Sampler] = Kind(name="sampler", hook="register_samplers", label="sampler", contract=Sampler)
UNCERTAINTY: Kind[UncertaintyMap] = Kind(name="uncertainty", hook="register_uncertainty_maps", label="uncertainty map",
                                         contract=UncertaintyMap)
DETECTOR: Kind[Detector] = Kind(name="detector", hook="register_detectors", label="detector", contract=Detector)
DATASET: Kind[Dataset] = Kind(name="dataset", hook="register_datasets", label="dataset", contract=Dataset)

KINDS: tuple[Kind[Any], ...] = (SEGMENTER, LOSS, SAMPLER, UNCERTAINTY, DETECTOR, DATASET)
"""Every kind, in the order listings show them."""


def kind(name: str) -> Kind[Any]:
    """The kind called ``name``; UsageError listing the known kinds otherwise."""
    for k in KINDS:
        if k.name == name:
            return k
    raise UsageError(f"unknown plugin kind {name!r}: expected one of {', '.join(k.name for k in KINDS)}")
