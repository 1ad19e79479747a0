"""The hookspec module is the whole extension surface: every hook is tested and documented in docs/plugins.md."""

from __future__ import annotations

import inspect
from pathlib import Path

from uqbench import hookspecs

TESTS = Path(__file__).parent
HOOKS = [name for name, fn in vars(hookspecs).items() if name.startswith("register_") and callable(fn)]


def test_there_is_one_hook_per_kind() -> None:
    from uqbench.kinds import KINDS

    assert sorted(HOOKS) == sorted(k.hook for k in KINDS)


def test_every_hook_has_a_test_hook_test() -> None:
    text = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py"))
    for hook in HOOKS:
        assert f"def test_hook_{hook}" in text, f"no test_hook_{hook}"


def test_every_hook_is_in_the_plugin_docs_with_its_signature() -> None:
    readme = (TESTS.parent / "docs" / "plugins.md").read_text()
    for hook in HOOKS:
        sig = inspect.signature(getattr(hookspecs, hook))
        params = ", ".join(p for p in sig.parameters)
        assert f"{hook}({params})" in readme, f"docs/plugins.md lacks {hook}({params})"
