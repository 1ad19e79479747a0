"""`uqbench plugins`: every registered method and every plugin that failed to load."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from uqbench.cli.app import app, console
from uqbench.errors import UsageError
from uqbench.kinds import KINDS
from uqbench.registry import BUILTIN, Entry, canonical, registry


@app.command("plugins")
def plugins_cmd(
    kind: Annotated[str | None, typer.Option(
        "--kind", help=f"Only this kind: {', '.join(k.name for k in KINDS)}.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """List registered methods: kind, name, distribution, version, description."""
    reg = registry()
    if kind is not None and kind not in [k.name for k in KINDS]:
        raise UsageError(f"--kind {kind!r}: expected one of {', '.join(k.name for k in KINDS)}")
    entries = [e.record() for e in reg.all_entries() if kind in (None, e.kind)]
    failed = [{"plugin": f.plugin, "distribution": f.distribution, "version": f.version, "error": f.error,
               "traceback": f.traceback} for f in reg.failures]
    conflicts = [{"kind": k, "name": n, "distributions": [e.distribution for e in es], "means": _meaning(n, es)}
                 for (k, n), es in reg.conflicts.items()]
    if as_json:
        print(json.dumps({"methods": entries, "failed": failed, "conflicts": conflicts, "allowed": reg.allowed,
                          "warnings": reg.warnings}, indent=1))
        return
    table = Table(title="uqbench methods")
    for col in ("kind", "name", "distribution", "version", "description"):
        table.add_column(col)
    for e in entries:
        table.add_row(*(Text(e[k]) for k in ("kind", "name", "distribution", "version", "description")))
    console.print(table)
    if failed:
        bad = Table(title="failed to load", style="red")
        for col in ("plugin", "distribution", "error"):
            bad.add_column(col)
        for f in failed:
            bad.add_row(Text(f["plugin"]), Text(f"{f['distribution']} {f['version']}"), Text(f["error"]))
        console.print(bad)
        if os.environ.get("UQBENCH_DEBUG"):
            for failure in reg.failures:
                if failure.traceback:
                    console.print(Text(f"{failure.distribution} [{failure.plugin}]:\n{failure.traceback}"),
                                  highlight=False)
    for c in conflicts:
        console.print(Text(f"name clash: {c['kind']} '{c['name']}' is registered by {', '.join(c['distributions'])}; "
                           f"{c['means']}. Set UQBENCH_PLUGINS to load only one."), style="yellow")
    note = reg.filter_note()
    if note:
        console.print(Text(f"{note} (unset it to load every installed plugin)"), style="yellow")
    for w in reg.warnings:
        console.print(Text(f"warning: {w}"), style="yellow")


def _meaning(name: str, clashing: list[Entry]) -> str:
    """What the bare and the qualified names of a clashing method mean."""
    qualified = ", ".join(f"'{canonical(e.distribution)}/{name}'" for e in clashing)
    if any(e.distribution == BUILTIN for e in clashing):
        return f"'{name}' means the built-in; each is reachable as {qualified}"
    return f"'{name}' means none of them; use {qualified}"
