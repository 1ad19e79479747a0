"""`uqbench plugins`: every registered method and every plugin that failed to load."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from uqbench.cli.app import app, console
from uqbench.errors import UsageError
from uqbench.kinds import KINDS
from uqbench.registry import registry


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
    failed = [{"plugin": f.plugin, "distribution": f.distribution, "version": f.version, "error": f.error}
              for f in reg.failures]
    conflicts = [{"kind": k, "name": n, "distributions": [e.distribution for e in es]}
                 for (k, n), es in reg.conflicts.items()]
    if as_json:
        print(json.dumps({"methods": entries, "failed": failed, "conflicts": conflicts}, indent=1))
        return
    table = Table(title="uqbench methods")
    for col in ("kind", "name", "distribution", "version", "description"):
        table.add_column(col)
    for e in entries:
        table.add_row(e["kind"], e["name"], e["distribution"], e["version"], e["description"])
    console.print(table)
    if failed or conflicts:
        bad = Table(title="failed to load", style="red")
        for col in ("plugin", "distribution", "error"):
            bad.add_column(col)
        for f in failed:
            bad.add_row(f["plugin"], f"{f['distribution']} {f['version']}", f["error"])
        for (kind_name, name), clashing in reg.conflicts.items():
            bad.add_row(name, ", ".join(e.distribution for e in clashing), f"{kind_name} name registered twice")
        console.print(bad)
