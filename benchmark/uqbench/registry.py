"""Plugin discovery: entry points in the ``uqbench`` group, each loaded in isolation, collected per kind.

pluggy's own ``load_setuptools_entrypoints`` aborts on the first broken plugin, so each entry point is
imported and registered here under its own ``try``; a failure is recorded (``Registry.failures``) and
shown by ``uqbench plugins`` while every other method keeps working. ``UQBENCH_PLUGINS`` (a comma list of
distribution names) restricts which distributions load, for reproducible runs.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata as md
import inspect
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from uqbench import hookspecs
from uqbench.errors import PluginError, UsageError

GROUP = "uqbench"
HOOKS = {
    "segmenter": "register_segmenters",
    "loss": "register_losses",
    "uncertainty": "register_uncertainty_maps",
    "detector": "register_detectors",
    "dataset": "register_datasets",
}
"""Kind -> the hook that registers methods of that kind."""

KIND_WORDS = {
    "segmenter": "segmenter",
    "loss": "loss",
    "uncertainty": "uncertainty map",
    "detector": "detector",
    "dataset": "dataset",
}
REQUIRED = {
    "segmenter": ("size_multiple", "build", "recipe"),
    "loss": ("__call__",),
    "uncertainty": ("samples", "__call__"),
    "detector": ("fit", "predict", "save", "load"),
    "dataset": ("problems", "cases", "folds", "fingerprint"),
}
"""Attributes each kind's class must define besides ``name`` (the contracts in ``uqbench.api``)."""

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True, slots=True)
class Entry:
    """One registered method and where it came from."""

    kind: str
    name: str
    factory: type
    plugin: str  # entry-point name, e.g. "segmenters"
    distribution: str  # e.g. "uqbench", "uqbench-nnunet"
    version: str

    @property
    def description(self) -> str:
        """First line of the class docstring."""
        return (inspect.getdoc(self.factory) or "").partition("\n")[0]

    def record(self) -> dict[str, str]:
        """The JSON-able form used by `uqbench plugins --json` and run provenance."""
        return {"kind": self.kind, "name": self.name, "distribution": self.distribution,
                "version": self.version, "plugin": self.plugin, "description": self.description}


@dataclass(frozen=True, slots=True)
class PluginFailure:
    """A plugin (or one of its registrations) that could not be used, and why."""

    plugin: str
    distribution: str
    version: str
    error: str

    def __str__(self) -> str:
        return f"plugin {self.distribution} {self.version} [{self.plugin}] {self.error}"


@dataclass(slots=True)
class Registry:
    """Every method registered through the ``uqbench`` entry points, by kind and name."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in HOOKS})
    conflicts: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    allowed: list[str] | None = None

    def names(self, kind: str) -> list[str]:
        """Sorted names of the usable methods of ``kind``."""
        return sorted(self._kind(kind))

    def all_entries(self) -> list[Entry]:
        return [e for kind in HOOKS for _, e in sorted(self.entries[kind].items())]

    def entry(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; an unknown or conflicting name is a one-line error with suggestions."""
        known = self._kind(kind)
        if (kind, name) in self.conflicts:
            both = " and ".join(f"{e.distribution} {e.version}" for e in self.conflicts[(kind, name)])
            raise PluginError(f"{KIND_WORDS[kind]} name '{name}' is registered by both {both}")
        if name in known:
            return known[name]
        word = KIND_WORDS[kind]
        msg = f"unknown {word} '{name}'."
        close = difflib.get_close_matches(name, list(known), n=1)
        if close:
            msg += f" Did you mean '{close[0]}'?"
        msg += f" Known: {', '.join(sorted(known)) or '(none)'}"
        if self.failures:
            msg += "; " + "; ".join(f"{f} (may provide it)" for f in self.failures)
        if not any(self.entries.values()) and not self.failures:
            msg += f"; no plugins found in entry-point group '{GROUP}': is uqbench installed? (pip install -e .)"
        raise UsageError(msg)

    def create(self, kind: str, spec: str, *leading: Any) -> Any:
        """Instantiate ``name[:arg...]`` as ``cls(*leading, *args)``, e.g. ``smp:unet:resnet34``."""
        name, *args = spec.split(":")
        entry = self.entry(kind, name)
        try:
            return entry.factory(*leading, *args)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{KIND_WORDS[kind]} '{spec}': bad arguments: {exc}") from exc

    def provenance(self, used: dict[str, str]) -> dict[str, Any]:
        """Which distributions were allowed and, per kind, the entry each used method came from."""
        out: dict[str, Any] = {"allowed_distributions": self.allowed, "methods": {}}
        for kind, spec in used.items():
            out["methods"][kind] = self.entry(kind, spec.split(":")[0]).record() | {"spec": spec}
        return out

    def _kind(self, kind: str) -> dict[str, Entry]:
        if kind not in self.entries:
            raise UsageError(f"unknown plugin kind '{kind}'. Known: {', '.join(HOOKS)}")
        return self.entries[kind]


class _Registrar:
    """The ``register`` callback handed to one plugin's hook: validates and records each class."""

    def __init__(self, reg: Registry, kind: str, plugin: str, dist: str, version: str,
                 seen: dict[tuple[str, str], list[Entry]]) -> None:
        self.reg, self.kind, self.plugin, self.dist, self.version, self.seen = reg, kind, plugin, dist, version, seen

    def __call__(self, cls: type) -> None:
        problem = _validate(self.kind, cls)
        if problem:
            self.reg.failures.append(PluginFailure(self.plugin, self.dist, self.version,
                                                   f"registered a bad {KIND_WORDS[self.kind]}: {problem}"))
            return
        name: str = getattr(cls, "name")  # noqa: B009  (checked by _validate)
        entry = Entry(self.kind, name, cls, self.plugin, self.dist, self.version)
        self.seen.setdefault((self.kind, name), []).append(entry)


def _validate(kind: str, cls: Any) -> str | None:
    """Why ``cls`` does not meet its kind's contract, or None."""
    if not isinstance(cls, type):
        return f"{cls!r} is not a class"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        return f"{cls.__name__}.name {name!r} must match {NAME_RE.pattern}"
    missing = [a for a in REQUIRED[kind] if not any(a in vars(k) for k in cls.__mro__ if k is not object)]
    if missing:
        return f"{cls.__name__} ('{name}') lacks {', '.join(missing)}"
    if not inspect.getdoc(cls):
        return f"{cls.__name__} ('{name}') has no docstring (its first line is the description)"
    return None


def _suggest(word: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known word, or ''."""
    return "".join(f" (did you mean '{m}'?)" for m in difflib.get_close_matches(word, list(known), 1))


def _allowed() -> list[str] | None:
    raw = os.environ.get("UQBENCH_PLUGINS")
    if raw is None:
        return None
    return [d.strip() for d in raw.split(",") if d.strip()]


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return [h.name for h in (pm.get_hookcallers(plugin) or []) if not h.has_spec()]


def build_registry() -> Registry:
    """Discover, load and collect every plugin; never raises for a broken plugin."""
    reg = Registry(allowed=_allowed())
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded: dict[str, tuple[object, str, str, str]] = {}
    eps = sorted(md.entry_points(group=GROUP), key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))
    for ep in eps:
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if reg.allowed is not None and dist not in reg.allowed:
            continue
        key = f"{dist}:{ep.name}"
        try:
            module = ep.load()
            pm.register(module, name=key)
        except Exception as exc:  # a plugin's bug must not hide the others
            reg.failures.append(PluginFailure(ep.name, dist, version,
                                              f"failed to load: {type(exc).__name__}: {exc}"))
            continue
        bad = _unknown_hooks(pm, module)
        if bad:
            hints = [f"'{b}'" + _suggest(b, HOOKS.values())
                     for b in bad]
            reg.failures.append(PluginFailure(ep.name, dist, version, f"defines unknown hook {', '.join(hints)}"))
        loaded[key] = (module, ep.name, dist, version)
    seen: dict[tuple[str, str], list[Entry]] = {}
    for kind, hook in HOOKS.items():
        for key, (_module, plugin, dist, version) in loaded.items():
            others = [mod for k, (mod, *_) in loaded.items() if k != key]
            caller = pm.subset_hook_caller(hook, remove_plugins=others)
            try:
                caller(register=_Registrar(reg, kind, plugin, dist, version, seen))
            except Exception as exc:
                why = f"{hook}() raised {type(exc).__name__}: {exc}"
                reg.failures.append(PluginFailure(plugin, dist, version, why))
    for (kind, name), entries in seen.items():
        if len({(e.distribution, e.factory) for e in entries}) > 1:
            reg.conflicts[(kind, name)] = entries
        else:
            reg.entries[kind][name] = entries[0]
    return reg


@functools.cache
def registry() -> Registry:
    """The process-wide registry, built on first use (so `uqbench --help` imports no plugin)."""
    return build_registry()


def reset() -> None:
    """Forget the cached registry (tests that change UQBENCH_PLUGINS or sys.path call this)."""
    registry.cache_clear()

