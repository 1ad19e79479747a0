"""Stage 6: thin typer commands that parse and print; ``main()`` is the single error boundary.

A ``UqbenchError`` becomes one red line on stderr and exit status 2 (``UQBENCH_DEBUG=1`` shows the
traceback); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from uqbench.cli import bench, cache, data, evaluate, folds, leaderboard, plugins, report, run, sweep  # noqa: F401  (commands register on import)
from uqbench.cli.app import app
from uqbench.errors import UqbenchError

INTERRUPTED = ("[yellow]interrupted[/yellow]: what finished is kept in the stage store (every finished stage, the "
               "last training checkpoint, the cases already predicted); run the same command again to resume")


def main() -> None:
    """Console-script entry point."""
    try:
        code = app(standalone_mode=False)  # returns a command's typer.Exit code instead of raising it
    except UqbenchError as exc:
        if os.environ.get("UQBENCH_DEBUG"):
            _print_plugin_tracebacks()
            raise
        _error(str(exc))
    except OSError as exc:  # the harness's own reads and writes: a full disk, a read-only folder, ...
        if os.environ.get("UQBENCH_DEBUG"):
            raise
        _error(_os_error(exc))
    except KeyboardInterrupt:
        Console(stderr=True).print(INTERRUPTED)
        sys.exit(130)
    except Exception as exc:  # typer/click usage errors carry their own exit code
        code = getattr(exc, "exit_code", None)
        if code is None:
            raise
        show = getattr(exc, "show", None)
        if show:
            show()
        sys.exit(code)
    if code == 130:  # typer turns Ctrl-C inside a command into exit status 130
        Console(stderr=True).print(INTERRUPTED)
    if isinstance(code, int) and code:
        sys.exit(code)


def _os_error(exc: OSError) -> str:
    """What an OSError of the harness's own reads and writes means for the user, in one line."""
    import errno

    from uqbench.data.cache import cache_root

    where = f"{exc.filename}: " if exc.filename else ""
    stages = cache_root().expanduser().resolve() / "stages"
    if exc.errno == errno.ENOENT and exc.filename and stages in Path(str(exc.filename)).resolve().parents:
        return (f"{where}removed from the stage store while this command read it (`uqbench cache prune` "
                "meanwhile?); run the same command again: what was removed is recomputed")
    return f"{where}{exc.strerror or exc} (nothing finished is lost; run again once this is fixed)"


def _error(message: str) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


def _print_plugin_tracebacks() -> None:
    """The import tracebacks of plugins that failed to load, if any were looked for (the error may be theirs)."""
    from uqbench.registry import registry

    if registry.cache_info().currsize:
        for failure in registry().failures:
            if failure.traceback:
                print(f"plugin {failure.distribution} [{failure.plugin}] failed to import:\n{failure.traceback}",
                      file=sys.stderr)
