"""Plugin discovery: entry points in the ``uqbench`` group, each loaded in isolation, collected per kind.

pluggy's own ``load_setuptools_entrypoints`` aborts on the first broken plugin, so each entry point is
imported and registered here under its own ``try``; a failure is recorded (``Registry.failures``) and
shown by ``uqbench plugins`` while every other method keeps working. ``UQBENCH_PLUGINS`` (a comma list of
distribution names, compared as pip compares them) restricts which distributions load, for reproducible runs.

A name registered by two distributions is reachable as ``<distribution>/<name>`` for each; the bare name means
the built-in (distribution ``uqbench``) when one of them is it, and nobody otherwise.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata as md
import inspect
import os
import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, overload

import pluggy

from uqbench import hookspecs
from uqbench.errors import DataError, PluginError, UsageError
from uqbench.kinds import KINDS, Kind, kind

GROUP = "uqbench"
BUILTIN = "uqbench"  # the distribution whose methods a bare conflicting name means
T = TypeVar("T")

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One registered method and where it came from."""

    kind: str  # a Kind's name
    name: str
    factory: type
    plugin: str  # entry-point name, e.g. "segmenters"
    distribution: str  # e.g. "uqbench", "uqbench-nnunet"
    version: str

    @property
    def description(self) -> str:
        """The first paragraph of the class docstring, on one line (a sentence may wrap in the source)."""
        return " ".join((inspect.getdoc(self.factory) or "").split("\n\n")[0].split())

    def record(self) -> dict[str, str]:
        """The JSON-able form used by `uqbench plugins --json` and run provenance."""
        return {"kind": self.kind, "name": self.name, "distribution": self.distribution,
                "version": self.version, "plugin": self.plugin, "description": self.description}


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginFailure:
    """A plugin (or one of its registrations) that could not be used, and why."""

    plugin: str
    distribution: str
    version: str
    error: str
    traceback: str = ""  # of an import that failed (shown with UQBENCH_DEBUG=1)

    def __str__(self) -> str:
        return f"plugin {self.distribution} {self.version} [{self.plugin}] {self.error}"


@dataclass(slots=True, kw_only=True)
class Registry:
    """Every method registered through the ``uqbench`` entry points, by kind and name."""

    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k.name: {} for k in KINDS})
    conflicts: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    allowed: list[str] | None = None  # canonical distribution names from UQBENCH_PLUGINS; None: all load
    warnings: list[str] = field(default_factory=list)

    def filter_note(self) -> str:
        """'' when every distribution loads, else a sentence naming the UQBENCH_PLUGINS filter."""
        if self.allowed is None:
            return ""
        return f"UQBENCH_PLUGINS limits loading to {', '.join(self.allowed) or 'nothing'}"

    def names(self, of: Kind[Any] | str) -> list[str]:
        """Sorted names of the usable methods of a kind."""
        return sorted(self._kind(of))

    def all_entries(self) -> list[Entry]:
        return [e for k in KINDS for _, e in sorted(self.entries[k.name].items())]

    def entry(self, of: Kind[Any] | str, name: str) -> Entry:
        """The entry for ``name``; an unknown or conflicting name is a one-line error with suggestions."""
        k = _as_kind(of)
        known = self._kind(k)
        if name in known:
            return known[name]
        if (k.name, name) in self.conflicts:
            clash = self.conflicts[(k.name, name)]
            both = " and ".join(f"{e.distribution} {e.version}" for e in clash)
            pick = " or ".join(f"'{canonical(e.distribution)}/{name}'" for e in clash)
            raise PluginError(f"{k.label} name '{name}' is registered by both {both}: name one as {pick}, or load "
                              f"only one of them with UQBENCH_PLUGINS")
        msg = f"unknown {k.label} '{name}'."
        close = difflib.get_close_matches(name, list(known), n=1)
        if close:
            msg += f" Did you mean '{close[0]}'?"
        msg += f" Known: {', '.join(sorted(known)) or '(none)'}"
        if self.failures:
            msg += "; " + "; ".join(f"{f} (may provide it)" for f in self.failures)
        if not any(self.entries.values()) and not self.failures:
            msg += f"; no plugins found in entry-point group '{GROUP}': is uqbench installed? (pip install -e .)"
        if self.allowed is not None:
            msg += f"; {self.filter_note()}, which may hide it"
        raise UsageError(msg)

    @overload
    def create(self, of: Kind[T], spec: str, *leading: Any) -> T: ...

    @overload
    def create(self, of: str, spec: str, *leading: Any) -> Any: ...

    def create(self, of: Kind[Any] | str, spec: str, *leading: Any) -> Any:
        """Instantiate ``name[:arg...]`` as ``cls(*leading, *args)``, e.g. ``smp:unet:resnet34``; typed by the
        kind's contract when given a ``Kind``."""
        k = _as_kind(of)
        name, *args = spec.split(":")
        entry = self.entry(k, name)
        try:
            return entry.factory(*leading, *args)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{k.label} '{spec}': bad arguments: {exc}") from exc
        except (UsageError, DataError, PluginError):
            raise
        except Exception as exc:  # the plugin's own bug, at creation
            raise self.fault(k, spec, f"failed when created: {type(exc).__name__}: {exc}") from exc

    def fault(self, of: Kind[Any], spec: str, what: str) -> PluginError:
        """The one-line error blaming the method ``spec`` of kind ``of``, with its distribution and version."""
        entry = self.entry(of, spec.split(":")[0])
        return PluginError(f"{of.name} '{spec}' ({entry.distribution} {entry.version}) {what}")

    def provenance(self, used: dict[str, str]) -> dict[str, Any]:
        """Which distributions were allowed and, per kind, the entry each used method came from."""
        out: dict[str, Any] = {"allowed_distributions": self.allowed, "methods": {}}
        for kind_name, spec in used.items():
            out["methods"][kind_name] = self.entry(kind_name, spec.split(":")[0]).record() | {"spec": spec}
        return out

    def _kind(self, of: Kind[Any] | str) -> dict[str, Entry]:
        return self.entries[_as_kind(of).name]


def _as_kind(of: Kind[Any] | str) -> Kind[Any]:
    return of if isinstance(of, Kind) else kind(of)


class _Registrar:
    """The ``register`` callback handed to one plugin's hook: validates and records each class."""

    def __init__(self, reg: Registry, of: Kind[Any], *, plugin: str, dist: str, version: str,
                 seen: dict[tuple[str, str], list[Entry]]) -> None:
        self.reg, self.kind, self.seen = reg, of, seen
        self.plugin, self.dist, self.version = plugin, dist, version

    def __call__(self, cls: type) -> None:
        problem = _validate(self.kind, cls)
        if problem:
            self.reg.failures.append(PluginFailure(plugin=self.plugin, distribution=self.dist, version=self.version,
                                                   error=f"registered a bad {self.kind.label}: {problem}"))
            return
        name: str = getattr(cls, "name")  # noqa: B009  (checked by _validate)
        entry = Entry(kind=self.kind.name, name=name, factory=cls, plugin=self.plugin, distribution=self.dist,
                      version=self.version)
        self.seen.setdefault((self.kind.name, name), []).append(entry)


def _validate(of: Kind[Any], cls: Any) -> str | None:
    """Why ``cls`` does not meet its kind's contract, or None."""
    if not isinstance(cls, type):
        return f"{cls!r} is not a class"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_RE.match(name):
        return f"{cls.__name__}.name {name!r} must match {NAME_RE.pattern}"
    missing = [a for a in of.required if not any(a in vars(k) for k in cls.__mro__ if k is not object)]
    if missing:
        return f"{cls.__name__} ('{name}') lacks {', '.join(missing)}"
    if not inspect.getdoc(cls):
        return f"{cls.__name__} ('{name}') has no docstring (its first line is the description)"
    return None


def _suggest(word: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known word, or ''."""
    return "".join(f" (did you mean '{m}'?)" for m in difflib.get_close_matches(word, list(known), 1))


def canonical(distribution: str) -> str:
    """A distribution name as pip compares them: lower case, each run of '-', '_' and '.' as one '-'."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _allowed() -> list[str] | None:
    raw = os.environ.get("UQBENCH_PLUGINS")
    if raw is None:
        return None
    return [canonical(d.strip()) for d in raw.split(",") if d.strip()]


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
        if reg.allowed is not None and canonical(dist) not in reg.allowed:
            continue
        key = f"{dist}:{ep.name}"
        try:
            module = ep.load()
            pm.register(module, name=key)
        except Exception as exc:  # a plugin's bug must not hide the others
            reg.failures.append(PluginFailure(plugin=ep.name, distribution=dist, version=version,
                                              error=f"failed to load: {type(exc).__name__}: {exc}",
                                              traceback=traceback.format_exc()))
            continue
        bad = _unknown_hooks(pm, module)
        if bad:
            hints = [f"'{b}'" + _suggest(b, [k.hook for k in KINDS]) for b in bad]
            reg.failures.append(PluginFailure(plugin=ep.name, distribution=dist, version=version,
                                              error=f"defines unknown hook {', '.join(hints)}"))
        loaded[key] = (module, ep.name, dist, version)
    seen: dict[tuple[str, str], list[Entry]] = {}
    for k in KINDS:
        for key, (_module, plugin, dist, version) in loaded.items():
            others = [mod for other, (mod, *_) in loaded.items() if other != key]
            caller = pm.subset_hook_caller(k.hook, remove_plugins=others)
            try:
                caller(register=_Registrar(reg, k, plugin=plugin, dist=dist, version=version, seen=seen))
            except Exception as exc:
                why = f"{k.hook}() raised {type(exc).__name__}: {exc}"
                reg.failures.append(PluginFailure(plugin=plugin, distribution=dist, version=version, error=why))
    for (kind_name, name), entries in seen.items():
        if len({(e.distribution, e.factory) for e in entries}) == 1:
            reg.entries[kind_name][name] = entries[0]
            continue
        reg.conflicts[(kind_name, name)] = entries
        for e in entries:
            qualified = f"{canonical(e.distribution)}/{name}"
            reg.entries[kind_name][qualified] = replace(e, name=qualified)
        builtin = [e for e in entries if e.distribution == BUILTIN]
        if builtin:
            reg.entries[kind_name][name] = builtin[0]
    if reg.allowed is not None:
        installed = {canonical(ep.dist.name) for ep in eps if ep.dist}
        reg.warnings += [f"UQBENCH_PLUGINS names '{d}', which matches no installed plugin distribution "
                         f"(installed: {', '.join(sorted(installed)) or 'none'})" for d in reg.allowed
                         if d not in installed]
    return reg


@functools.cache
def registry() -> Registry:
    """The process-wide registry, built on first use (so `uqbench --help` imports no plugin)."""
    return build_registry()


def reset() -> None:
    """Forget the cached registry (tests that change UQBENCH_PLUGINS or sys.path call this)."""
    registry.cache_clear()

