"""Packaging guards: every package ships in a wheel, and listing plugins never imports torch."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_folders_are_named_like_the_packages_they_hold() -> None:
    """benchmark/uqbench is uqbench and plugins/uqbench_plugins is uqbench_plugins: no package-dir mapping, so
    setuptools discovers them and every editor and checker resolves imports from the folder names."""
    import uqbench
    import uqbench_plugins

    assert Path(uqbench.__file__).parent == REPO / "benchmark" / "uqbench"
    assert Path(uqbench_plugins.__file__).parent == REPO / "plugins" / "uqbench_plugins"
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = cfg["tool"]["setuptools"]
    assert "package-dir" not in setuptools  # no mapping, and packages are found, not listed by hand
    assert setuptools["packages"] == {"find": {"where": ["benchmark", "plugins"]}}
    assert sorted(p.name for p in (REPO / "benchmark").iterdir() if p.name != "__pycache__") == ["uqbench"]
    assert sorted(p.name for p in (REPO / "plugins").iterdir() if p.name != "__pycache__") == ["uqbench_plugins"]


def test_cli_import_and_plugin_listing_do_not_import_torch() -> None:
    code = ("import sys, uqbench.cli; from uqbench.registry import registry; registry(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_ci_runs_the_readme_test_command_then_its_checks_verbatim() -> None:
    readme = (REPO / "README.md").read_text().splitlines()
    tests = next(line.strip() for line in readme if ".venv/bin/pytest" in line)
    checks = next(line.strip() for line in readme if ".venv/bin/mypy" in line)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci and checks in ci and ci.index(tests) < ci.index(checks)
    assert "ruff check" in checks and "'.[lint]'" in checks


def test_regular_wheel_contains_every_module_and_the_fold_table(tmp_path: Path) -> None:
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("uqbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("benchmark", "plugins"):
        for py in (REPO / folder).rglob("*.py"):
            assert py.relative_to(REPO / folder).as_posix() in names
    assert "uqbench/data/folds.json" in names
    assert any(n.endswith("entry_points.txt") for n in names)
