"""Packaging guards: every package ships in a wheel, and listing plugins never imports torch."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_in_pyproject_package_list() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in (("benchmark", "uqbench"), ("plugins", "uqbench_plugins")):
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def test_cli_import_and_plugin_listing_do_not_import_torch() -> None:
    code = ("import sys, uqbench.cli; from uqbench.registry import registry; registry(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (REPO / "README.md").read_text()
    command = next(line.strip() for line in readme.splitlines() if ".venv/bin/pytest" in line)
    assert command in (REPO / ".ci" / "run").read_text().splitlines()


def test_regular_wheel_contains_every_module_and_the_fold_table(tmp_path: Path) -> None:
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("uqbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, name in (("benchmark", "uqbench"), ("plugins", "uqbench_plugins")):
        for py in (REPO / folder).rglob("*.py"):
            assert f"{name}/{py.relative_to(REPO / folder).as_posix()}" in names
    assert "uqbench/data/folds.json" in names
    assert any(n.endswith("entry_points.txt") for n in names)
