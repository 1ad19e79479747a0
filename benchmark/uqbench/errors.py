"""The errors a user can fix. Each has a one-line ``str()``; the CLI prints it and exits with status 2."""

from __future__ import annotations


class UqbenchError(Exception):
    """A problem the user can fix (bad option, bad file, broken plugin)."""

    def __str__(self) -> str:
        return " ".join(super().__str__().split())  # always one line


class UsageError(UqbenchError):
    """A bad option or an unknown name; the message lists the valid choices."""


class DataError(UqbenchError):
    """A bad input file or folder; the message starts with its path."""


class PluginError(UqbenchError):
    """A plugin failed: names kind, method, distribution and version, and the case when at run time."""


class MethodFault(PluginError):
    """Raised where the harness finds that a method of ``kind`` broke its contract (a bad output, or it raised);
    the run reports it as a PluginError naming the method, the stage and the case."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.detail = kind, message
