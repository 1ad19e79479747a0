"""mkdocs hook: the CLI reference page is generated from the typer app at build time, so it cannot drift from
``uqbench --help``."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- cli-reference -->"


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("\\[", "[").replace("|", "\\|")


def _command(cmd: Any, path: str) -> list[str]:
    """A command's section (typer's own click objects, read by their attributes)."""
    lines = [f"## `{path}`", "", _cell(cmd.help or ""), ""]
    params = [p for p in cmd.params if p.name != "help"]
    if params:
        lines += ["| option | help | default |", "|---|---|---|"]
        for p in params:
            names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts]) if p.param_type_name == "option" \
                else f"`{(p.name or '').upper()}` (argument)"
            empty = p.default is None or p.default is False or p.default == () or p.required
            default = "" if empty else f"`{_cell(p.default)}`"
            lines.append(f"| {names} | {_cell(getattr(p, 'help', '') or '')} | {default} |")
        lines.append("")
    if hasattr(cmd, "commands"):
        for name in sorted(cmd.commands):
            lines += _command(cmd.commands[name], f"{path} {name}")
    return lines


def reference() -> str:
    """Every command of ``uqbench``, with its options, as markdown."""
    import typer

    from uqbench.cli import app

    root: Any = typer.main.get_command(app)
    lines: list[str] = []
    for name in sorted(root.commands):
        lines += _command(root.commands[name], f"uqbench {name}")
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, reference())
    return markdown
