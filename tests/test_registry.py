"""Discovery through real entry-point metadata: isolation, conflicts, unknown hooks and names, the switch."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from uqbench.errors import PluginError, UsageError
from uqbench.registry import registry, reset


def install_fake(tmp_path: Path, dist: str, module: str, source: str, entry: str | None = None) -> None:
    """Make ``module`` an installed distribution ``dist`` with a ``uqbench`` entry point (real metadata on sys.path)."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[uqbench]\n{entry or module} = {module}\n")
    if str(tmp_path) not in sys.path:
        sys.path.insert(0, str(tmp_path))


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    yield tmp_path
    sys.path[:] = [p for p in sys.path if p != str(tmp_path)]
    for name in [m for m in sys.modules if m.startswith("uqbench_fake")]:
        del sys.modules[name]


def allow(*dists: str) -> None:
    os.environ["UQBENCH_PLUGINS"] = ",".join(("uqbench", *dists))
    reset()


def test_hook_register_segmenters_builtin_drn_is_registered_by_uqbench() -> None:
    e = registry().entry("segmenter", "drn")
    assert e.distribution == "uqbench" and e.plugin == "segmenters" and "DRN-D-22" in e.description


def test_hook_register_losses_builtins() -> None:
    assert {"ce", "soft-dice", "brier"} <= set(registry().names("loss"))


def test_hook_register_uncertainty_maps_builtins() -> None:
    assert {"emap", "bmap"} <= set(registry().names("uncertainty"))


def test_hook_register_detectors_builtin_threshold() -> None:
    assert "threshold" in registry().names("detector")


def test_hook_register_datasets_builtin_acdc() -> None:
    assert registry().names("dataset") == ["acdc"]


def test_broken_plugin_is_reported_and_others_still_work(sandbox: Path) -> None:
    install_fake(sandbox, "uqbench-broken", "uqbench_fake_broken", "import not_a_module_anywhere\n")
    allow("uqbench-broken")
    reg = registry()
    assert "drn" in reg.names("segmenter")
    (f,) = reg.failures
    assert f.distribution == "uqbench-broken" and "ModuleNotFoundError" in f.error
    with pytest.raises(UsageError, match=r"uqbench-broken 0\.3 .* failed to load"):
        reg.entry("segmenter", "nnunet")


def test_raising_hook_and_bad_registration_are_attributed(sandbox: Path) -> None:
    install_fake(sandbox, "uqbench-bad", "uqbench_fake_bad", """
        import uqbench

        class NoDoc:
            name = "nodoc"
            samples = 1
            def __call__(self, probs): return probs[0, :, 0]

        @uqbench.hookimpl
        def register_uncertainty_maps(register):
            register(NoDoc)

        @uqbench.hookimpl
        def register_losses(register):
            raise RuntimeError("boom")
    """)
    allow("uqbench-bad")
    reg = registry()
    errors = " | ".join(str(f) for f in reg.failures)
    assert "has no docstring" in errors and "register_losses() raised RuntimeError: boom" in errors
    assert "nodoc" not in reg.names("uncertainty") and "ce" in reg.names("loss")


def test_misspelled_hook_is_reported_with_suggestion(sandbox: Path) -> None:
    install_fake(sandbox, "uqbench-typo", "uqbench_fake_typo", """
        import uqbench

        @uqbench.hookimpl
        def register_segmenter(register):
            pass
    """)
    allow("uqbench-typo")
    (f,) = registry().failures
    assert "unknown hook 'register_segmenter' (did you mean 'register_segmenters'?)" in f.error


def test_same_name_from_two_distributions_is_a_conflict_naming_both(sandbox: Path) -> None:
    install_fake(sandbox, "uqbench-dup", "uqbench_fake_dup", '''
        import uqbench

        class Entropy:
            """Another emap."""
            name = "emap"
            samples = 1
            def __call__(self, probs): return probs[0, :, 0]

        @uqbench.hookimpl
        def register_uncertainty_maps(register):
            register(Entropy)
    ''')
    allow("uqbench-dup")
    with pytest.raises(PluginError, match=r"'emap' is registered by both uqbench 0\.1\.0 and uqbench-dup 0\.3"):
        registry().entry("uncertainty", "emap")
    assert "bmap" in registry().names("uncertainty")


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UsageError, match=r"unknown segmenter 'drm'\. Did you mean 'drn'\? Known: dn, drn, smp, unet"):
        registry().entry("segmenter", "drm")


def test_switch_limits_loaded_distributions(sandbox: Path) -> None:
    install_fake(sandbox, "uqbench-other", "uqbench_fake_other", '''
        import uqbench

        class L1:
            """An extra loss."""
            name = "l1"
            def __call__(self, logits, labels): return logits.abs().mean()

        @uqbench.hookimpl
        def register_losses(register):
            register(L1)
    ''')
    allow("uqbench-other")
    assert "l1" in registry().names("loss")
    allow()
    assert "l1" not in registry().names("loss")
    os.environ["UQBENCH_PLUGINS"] = ""
    reset()
    with pytest.raises(UsageError, match="no plugins found"):
        registry().entry("segmenter", "drn")


def test_provenance_records_distribution_and_spec() -> None:
    prov = registry().provenance({"segmenter": "drn", "uncertainty": "bmap"})
    assert prov["allowed_distributions"] == ["uqbench"]
    assert prov["methods"]["segmenter"]["distribution"] == "uqbench" and prov["methods"]["segmenter"]["spec"] == "drn"


def test_class_lacking_a_contract_method_is_refused(sandbox: Path) -> None:
    install_fake(sandbox, "uqbench-nocall", "uqbench_fake_nocall", '''
        import uqbench

        class NotCallable:
            """A loss that forgot __call__."""
            name = "forgot"

        @uqbench.hookimpl
        def register_losses(register):
            register(NotCallable)
    ''')
    allow("uqbench-nocall")
    reg = registry()
    assert "forgot" not in reg.names("loss")
    assert any("NotCallable ('forgot') lacks __call__" in str(f) for f in reg.failures)
