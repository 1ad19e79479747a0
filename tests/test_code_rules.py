"""House rules a reader relies on, checked over the core, the built-in plugins and the example plugin: calls with
many arguments name them, and no type check is silenced without a reason."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "benchmark").rglob("*.py"), *(REPO / "plugins").rglob("*.py"),
                  REPO / "tests" / "example_plugin" / "uqbench_example.py"])
MAX_POSITIONAL = 3


def _trees() -> Iterator[tuple[str, ast.Module]]:
    for path in SOURCES:
        yield str(path.relative_to(REPO)), ast.parse(path.read_text())


def test_there_are_sources_to_check() -> None:
    names = {p.name for p in SOURCES}
    assert {"orchestrate.py", "api.py", "sresnet.py", "uqbench_example.py"} <= names and len(SOURCES) > 50


def test_functions_with_more_than_three_parameters_take_the_rest_by_keyword() -> None:
    bad = []
    for where, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                positional = [p.arg for p in a.posonlyargs + a.args if p.arg not in ("self", "cls")]
                if len(positional) + len(a.kwonlyargs) > MAX_POSITIONAL and len(positional) > MAX_POSITIONAL:
                    bad.append(f"{where}:{node.lineno} {node.name}({', '.join(positional)}, ...)")
    assert not bad, "put a * after the third parameter:\n" + "\n".join(bad)


def _is_dataclass_decorator(d: ast.expr) -> bool:
    target = d.func if isinstance(d, ast.Call) else d
    return isinstance(target, ast.Name | ast.Attribute) and ast.unparse(target) in (
        "dataclass", "dataclasses.dataclass")


def test_dataclasses_with_more_than_three_fields_are_keyword_only() -> None:
    bad = []
    for where, tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            deco = next((d for d in node.decorator_list if _is_dataclass_decorator(d)), None)
            if deco is None:
                continue
            fields = [s for s in node.body
                      if isinstance(s, ast.AnnAssign) and "ClassVar" not in ast.unparse(s.annotation)]
            kw_only = isinstance(deco, ast.Call) and any(
                k.arg == "kw_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in deco.keywords)
            if len(fields) > MAX_POSITIONAL and not kw_only:
                bad.append(f"{where}:{node.lineno} {node.name} ({len(fields)} fields)")
    assert not bad, "add kw_only=True to:\n" + "\n".join(bad)


IGNORE = re.compile(r"#\s*type:\s*ignore(?P<code>\[[a-z-, ]+\])?(?P<rest>.*)$")


def test_every_type_ignore_names_its_code_and_says_why() -> None:
    bad = []
    for path in SOURCES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = IGNORE.search(line)
            if m and (not m["code"] or not re.search(r"\w", m["rest"])):
                bad.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not bad, "write `# type: ignore[code]  # why`:\n" + "\n".join(bad)
