"""The public API a plugin is written against: uqbench, uqbench.plugin (and uqbench.testing for its tests).
uqbench's own built-ins and the example plugin use nothing else, so the boundary is real, not aspirational."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import uqbench
import uqbench.plugin

REPO = Path(__file__).resolve().parents[1]
PUBLIC_FOR_PLUGINS = {"uqbench", "uqbench.plugin"}


def _core_imports(path: Path) -> list[str]:
    """The uqbench modules a file imports (not uqbench_plugins, which is the built-ins' own package)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "uqbench":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "uqbench"]
    return found


def test_builtins_and_the_example_import_only_the_public_api() -> None:
    files = [*(REPO / "plugins").rglob("*.py"), REPO / "tests" / "example_plugin" / "uqbench_example.py"]
    used = {str(f.relative_to(REPO)): _core_imports(f) for f in files}
    assert sum(map(len, used.values())) > 5  # they do use the core
    private = {f: [m for m in mods if m not in PUBLIC_FOR_PLUGINS] for f, mods in used.items()}
    assert not any(private.values()), {f: m for f, m in private.items() if m}


def test_every_public_name_exists_and_the_plugin_docs_name_it() -> None:
    readme = (REPO / "docs" / "plugins.md").read_text()
    for module in (uqbench, uqbench.plugin):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    missing = [n for n in uqbench.plugin.__all__ if not n.isupper() and f"`{n}`" not in readme]
    assert not missing, f"docs/plugins.md does not name {missing}"


def test_importing_the_plugin_helpers_does_not_import_torch() -> None:
    code = "import sys, uqbench.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
