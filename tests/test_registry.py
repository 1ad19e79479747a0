"""Discovery through real entry-point metadata: isolation, conflicts, unknown hooks and names, the switch."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

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


def test_hook_register_samplers_builtins() -> None:
    assert registry().names("sampler") == ["ensemble", "mc-dropout", "tta"]
    assert registry().entry("sampler", "tta").distribution == "uqbench"


def test_hook_register_uncertainty_maps_builtins() -> None:
    assert {"emap", "bmap"} <= set(registry().names("uncertainty"))


def test_hook_register_detectors_builtin_threshold() -> None:
    assert "threshold" in registry().names("detector")


def test_hook_register_datasets_builtin_acdc_and_nnunet() -> None:
    assert registry().names("dataset") == ["acdc", "nnunet"]


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


EMAP_AGAIN = '''
    import uqbench

    class Entropy:
        """Another emap."""
        name = "emap"
        samples = 1
        def __call__(self, probs): return probs[0, :, 0]

    @uqbench.hookimpl
    def register_uncertainty_maps(register):
        register(Entropy)
'''


def test_a_builtin_name_registered_again_still_means_the_builtin(sandbox: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    install_fake(sandbox, "uqbench-dup", "uqbench_fake_dup", EMAP_AGAIN)
    allow("uqbench-dup")
    reg = registry()
    assert reg.entry("uncertainty", "emap").distribution == "uqbench"  # the README's default command keeps working
    assert reg.entry("uncertainty", "uqbench/emap").distribution == "uqbench"
    other = reg.create("uncertainty", "uqbench-dup/emap")
    assert type(other).__module__ == "uqbench_fake_dup" and "bmap" in reg.names("uncertainty")
    from uqbench.cli.plugins import plugins_cmd

    plugins_cmd(kind=None, as_json=False)
    out = " ".join(capsys.readouterr().out.split())
    assert "uncertainty 'emap' is registered by uqbench, uqbench-dup; 'emap' means the built-in" in out
    assert "'uqbench-dup/emap'" in out and "UQBENCH_PLUGINS" in out


def test_a_name_two_third_parties_register_means_neither(sandbox: Path) -> None:
    install_fake(sandbox, "uqbench-one", "uqbench_fake_one", EMAP_AGAIN.replace('"emap"', '"shared"'))
    install_fake(sandbox, "uqbench_Two", "uqbench_fake_two", EMAP_AGAIN.replace('"emap"', '"shared"'))
    allow("uqbench-one", "uqbench-two")
    reg = registry()
    with pytest.raises(PluginError, match=r"'shared' is registered by both uqbench-one 0\.3 and uqbench_Two 0\.3: "
                                          r"name one as 'uqbench-one/shared' or 'uqbench-two/shared', or load only one "
                                          r"of them with UQBENCH_PLUGINS"):
        reg.entry("uncertainty", "shared")
    assert type(reg.create("uncertainty", "uqbench-two/shared")).__module__ == "uqbench_fake_two"
    assert type(reg.create("uncertainty", "uqbench-one/shared")).__module__ == "uqbench_fake_one"


def test_the_filter_compares_names_as_pip_does_and_warns_about_unknown_ones(sandbox: Path) -> None:
    install_fake(sandbox, "uqbench-other", "uqbench_fake_other", EMAP_AGAIN.replace('"emap"', '"other-map"'))
    os.environ["UQBENCH_PLUGINS"] = "UQBench, uqbench_Other, uqbench-typo"
    reset()
    reg = registry()
    assert "other-map" in reg.names("uncertainty") and "drn" in reg.names("segmenter")
    (warning,) = reg.warnings
    assert warning.startswith("UQBENCH_PLUGINS names 'uqbench-typo', which matches no installed plugin distribution")
    with pytest.raises(UsageError, match="UQBENCH_PLUGINS limits loading to uqbench, uqbench-other, uqbench-typo, "
                                         "which may hide it"):
        reg.entry("segmenter", "nnunet")


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


def test_text_in_square_brackets_is_shown_not_taken_for_markup(sandbox: Path, monkeypatch: pytest.MonkeyPatch,
                                                               cli: Any) -> None:
    install_fake(sandbox, "uqbench-badname", "uqbench_fake_badname", EMAP_AGAIN.replace('"emap"', '"Bad Name"'))
    allow("uqbench-badname")
    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = cli("plugins")
    assert code == 0 and "must match ^[a-z][a-z0-9-]{0,31}$" in out
    code, _, err = cli("run", "--segmenter", "no[bold]pe")
    assert code == 2 and "unknown segmenter 'no[bold]pe'" in err


def test_debug_shows_the_import_traceback_of_a_broken_plugin(sandbox: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str], cli: Any) -> None:
    install_fake(sandbox, "uqbench-broken", "uqbench_fake_broken", "import not_a_module_anywhere\n")
    allow("uqbench-broken")
    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = cli("plugins")
    assert code == 0 and "Traceback" not in out
    monkeypatch.setenv("UQBENCH_DEBUG", "1")
    code, out, _ = cli("plugins")
    assert "Traceback (most recent call last)" in out and 'uqbench_fake_broken.py", line 1' in out
    with pytest.raises(UsageError):  # a one-line error is re-raised with its traceback under UQBENCH_DEBUG ...
        cli("run", "--segmenter", "nnunet")
    err = capsys.readouterr().err  # ... after the import tracebacks of the plugins that failed
    assert "plugin uqbench-broken [uqbench_fake_broken] failed to import" in err and "ModuleNotFoundError" in err


def test_a_plugin_failing_at_creation_or_in_its_recipe_is_named(sandbox: Path, tmp_path: Path) -> None:
    install_fake(sandbox, "uqbench-fragile", "uqbench_fake_fragile", '''
        import uqbench

        class Fragile:
            """Cannot be created."""
            name = "fragile"
            samples = 1
            def __init__(self): raise RuntimeError("no GPU driver")
            def __call__(self, probs): return probs[0, :, 0]

        class NoRecipe:
            """Has no recipe for any profile."""
            name = "norecipe"
            size_multiple = 8
            def build(self, **kwargs): raise AssertionError("not reached")
            def recipe(self, profile): raise KeyError(profile)

        @uqbench.hookimpl
        def register_uncertainty_maps(register):
            register(Fragile)

        @uqbench.hookimpl
        def register_segmenters(register):
            register(NoRecipe)
    ''')
    allow("uqbench-fragile")
    with pytest.raises(PluginError, match=r"^uncertainty 'fragile' \(uqbench-fragile 0\.3\) failed when created: "
                                          r"RuntimeError: no GPU driver$"):
        registry().create("uncertainty", "fragile")
    from uqbench import config

    with pytest.raises(PluginError, match=r"^segmenter 'norecipe' \(uqbench-fragile 0\.3\) failed giving its quick "
                                          r"recipe: KeyError"):
        config.resolve(segmenter="norecipe", uncertainty="emap", detector=None, loss=None, data=None,
                       dataset="acdc", folds=[0], profile="quick", samples=None, device="cpu", seed=0,
                       out=tmp_path / "run")
