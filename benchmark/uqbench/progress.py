"""Progress a user sees while waiting: the part of rich's Progress the harness drives, and bars that appear only
when there is work (a stage served from the store shows none)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Progress(Protocol):
    """The part of rich's Progress the harness uses (the CLI passes one in; tests may pass None)."""

    def add_task(self, description: str, *, total: float | None = ...) -> Any: ...

    def advance(self, task_id: Any, advance: float = ...) -> None: ...


def tracker(progress: Progress | None, description: str, total: int) -> Callable[[int], None]:
    """An ``advance(n)`` callback whose bar appears on first use, so a stage served from the store shows none."""
    if progress is None:
        return lambda n: None
    task = None

    def advance(n: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task(description, total=total)
        progress.advance(task, n)

    return advance


def overall(progress: Progress | None, description: str, total: int) -> Callable[[int], None]:
    """A bar shown at once (elapsed time and ETA over the whole command), advanced as each of ``total`` parts
    ends."""
    if progress is None:
        return lambda n: None
    task = progress.add_task(description, total=total)
    return lambda n: progress.advance(task, n)
