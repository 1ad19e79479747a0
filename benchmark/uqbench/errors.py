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
