"""The one way the harness calls into a plugin: whatever goes wrong inside is blamed on the method at work, by
name, with its distribution, version, the stage and the case (DESIGN.md rule 6: a plugin that fails is reported).

Runs and ``uqbench evaluate`` both call plugins through a :class:`Blamer`, so a fault reads the same whoever
called. What is not a method's fault passes through as it is: the user's errors (UsageError, DataError), a
PluginError already naming its method, an interrupt, and OSError (a full disk or a vanished file is the
machine's, not the method's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from uqbench.errors import DataError, MethodFault, PluginError, UsageError
from uqbench.kinds import Kind, kind
from uqbench.registry import registry


class Blamer:
    """Blames faults on the methods of one run or evaluation (``specs``: kind name -> the spec it was created
    from, e.g. {"segmenter": "drn", "detector": "sresnet:500"})."""

    def __init__(self, specs: Mapping[str, str | None]) -> None:
        self.specs = {k: v for k, v in specs.items() if v is not None}

    def fault(self, of: Kind[Any], *, where: str, detail: str) -> PluginError:
        """The PluginError blaming the method of kind ``of`` for ``detail`` during ``where``."""
        spec = self.specs.get(of.name)
        if spec is None:  # a kind the caller did not name: say so plainly rather than guess a method
            return PluginError(f"{of.name}: failed in {where}: {detail}")
        return registry().fault(of, spec, f"failed in {where}: {detail}")

    @contextmanager
    def blame(self, of: Kind[Any], where: str) -> Iterator[None]:
        """Code run inside is a method of kind ``of`` at work in ``where``: its unexpected exception, or a
        MethodFault the harness raised on a method's output (blamed on the kind it names), becomes a
        PluginError naming that method."""
        try:
            yield
        except MethodFault as exc:
            raise self.fault(kind(exc.kind), where=where, detail=exc.detail) from exc
        except (UsageError, DataError, PluginError, KeyboardInterrupt, OSError):
            raise
        except Exception as exc:
            raise self.fault(of, where=where, detail=f"{type(exc).__name__}: {exc}") from exc

    def call(self, of: Kind[Any], fn: Callable[..., Any], *args: Any, where: str, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, a method of kind ``of`` at work in ``where``, blamed as :meth:`blame` says."""
        with self.blame(of, where):
            return fn(*args, **kwargs)

    def attributed(self, of: Kind[Any], obj: Callable[..., Any], *, where: str) -> Callable[..., Any]:
        """``obj`` wrapped so that a fault in its calls names it, not the caller's method (a loss failing
        inside the segmenter's training is the loss's fault)."""
        return lambda *args: self.call(of, obj, *args, where=where)
