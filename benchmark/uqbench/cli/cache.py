"""`uqbench cache ls|du|prune`: show and free the stage store ($UQBENCH_CACHE/stages)."""

from __future__ import annotations

import fcntl
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from uqbench.cli.app import app, console
from uqbench.data.cache import cache_root
from uqbench.errors import UsageError
from uqbench.store import Entry, Store, open_store

cache_app = typer.Typer(help="Show and free the stage store: every stage output of every run, by key.",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")

Stage = Annotated[str | None, typer.Option("--stage", help="Only this stage (train, predict, maps, ...).")]


def _store() -> Store:
    return open_store(cache_root())


def _check_stage(stage: str | None, store: Store) -> None:
    """UsageError unless ``stage`` is a stage of the graph or one the store holds (from an older uqbench)."""
    from uqbench.run.graph import STAGES

    known = sorted(set(STAGES) | {e.stage for e in store.entries()})
    if stage is not None and stage not in known:
        raise UsageError(f"--stage {stage!r}: expected one of {', '.join(known)}")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "?"


@cache_app.command("ls")
def ls_cmd(stage: Stage = None) -> None:
    """List stored stage outputs, oldest first: stage, key, size, when computed."""
    store = _store()
    _check_stage(stage, store)
    entries = [e for e in store.entries() if stage in (None, e.stage)]
    table = Table(title=f"stage store {store.root / 'stages'} ({len(entries)} outputs)")
    for col in ("stage", "key", "size", "computed", "problem"):
        table.add_column(col)
    for e in entries:
        table.add_row(e.stage, e.digest[:12], _size(e.bytes), _when(e.created), e.problem)
    console.print(table)
    for p in store.leftovers():
        if stage in (None, p.parent.name):
            console.print(f"unfinished: {p} (a stage running now, or killed; resumed or cleared when next needed)",
                          markup=False, highlight=False)


@cache_app.command("du")
def du_cmd() -> None:
    """Disk used by the stage store per stage, and by the prepared data."""
    store = _store()
    table = Table(title=f"disk use under {store.root}")
    for col in ("what", "outputs", "size"):
        table.add_column(col)
    per: dict[str, list[Entry]] = {}
    for e in store.entries():
        per.setdefault(e.stage, []).append(e)
    for name, entries in sorted(per.items()):
        table.add_row(f"stages/{name}", str(len(entries)), _size(sum(e.bytes for e in entries)))
    prepared = store.root / "prepared"
    if prepared.is_dir():
        table.add_row("prepared", str(sum(1 for p in prepared.iterdir() if p.is_dir())),
                      _size(sum(p.stat().st_size for p in prepared.rglob("*") if p.is_file())))
    console.print(table)


@cache_app.command("prune")
def prune_cmd(
    stage: Stage = None,
    older_than: Annotated[float | None, typer.Option(
        "--older-than", help="Only outputs computed more than this many days ago.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Every stored output (with no other option).")] = False,
) -> None:
    """Delete stored stage outputs (run folders keep their results and NIfTI files; a later run recomputes what it
    needs), and unfinished stages no process is working on."""
    if stage is None and older_than is None and not everything:
        raise UsageError("cache prune: say what to delete: --stage, --older-than or --all")
    if everything and (stage is not None or older_than is not None):
        raise UsageError("cache prune: --all deletes everything; leave out --stage and --older-than")
    if older_than is not None and older_than < 0:
        raise UsageError(f"--older-than {older_than}: must be 0 or more days")
    store = _store()
    _check_stage(stage, store)
    cutoff = time.time() - 86400 * (older_than or 0)
    freed, removed = 0, 0
    for e in store.entries():
        if stage in (None, e.stage) and (older_than is None or e.created < cutoff) and _remove(e.path):
            freed, removed = freed + e.bytes, removed + 1
    for p in store.leftovers():
        if stage in (None, p.parent.name) and older_than is None and _remove(p):
            removed += 1
    console.print(f"removed {removed} stage outputs, {_size(freed)} freed", markup=False, highlight=False)


def _remove(folder: Path) -> bool:
    """Delete a stage folder unless a process holds its key's lock (it is being computed); True when deleted."""
    digest = folder.name.removesuffix(".part")
    lock = folder.with_name(digest + ".lock")
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            shutil.rmtree(folder)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    lock.unlink(missing_ok=True)
    return True
