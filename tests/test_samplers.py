"""Samplers in a run: the harness trains and stores each member an ensemble draws from, a sampler that needs no
training reuses the segmenter's stored model, and a sampler that does not fit the map is refused before any work
(issue 27)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from uqbench import config
from uqbench import run as runs
from uqbench.errors import PluginError, UsageError
from uqbench.registry import registry

pytestmark = pytest.mark.e2e  # every test here runs the pipeline (but the refusals, which stop before it)


def _cfg(data: Path, out: Path, **kw: Any) -> config.RunConfig:
    args: dict[str, Any] = dict(segmenter="drn", uncertainty="bmap", detector=None, loss=None, data=data,
                                dataset="acdc", folds=[0], profile="quick", samples=None, device="cpu", seed=0,
                                out=out, iterations=3)
    return config.resolve(**args | kw)


def _trained(summary: Any) -> list[tuple[str, bool]]:
    """(detail, from the store) of each training stage a run served, in order."""
    return [(r.detail, r.from_store) for r in summary.stages if r.stage == "train"]


def test_an_ensemble_trains_each_member_once_and_shares_the_first_with_mc_dropout(
        tiny_phantom: Path, tmp_path: Path, fresh_store: Path) -> None:
    plain = runs.run(_cfg(tiny_phantom, tmp_path / "mc"))
    assert _trained(plain) == [("", False)]
    three = runs.run(_cfg(tiny_phantom, tmp_path / "e3", sampler="ensemble:3"))
    assert _trained(three) == [("", True), ("member 1", False), ("member 2", False)]
    five = runs.run(_cfg(tiny_phantom, tmp_path / "e5", sampler="ensemble:5"))
    assert _trained(five) == [("", True), ("member 1", True), ("member 2", True), ("member 3", False),
                              ("member 4", False)]
    assert three.provenance.methods["sampler"].name == "ensemble"
    assert config.read(tmp_path / "e3" / "config.json").sampler == "ensemble:3"
    # bmap on an ensemble is the members' spread: distinct seed streams give distinct members
    assert all(v.uncertainty is not None and v.uncertainty > 0 for v in three.per_volume)


def test_tta_reuses_the_stored_model_and_draws_its_eight_samples(tiny_phantom: Path, tmp_path: Path,
                                                                 fresh_store: Path) -> None:
    runs.run(_cfg(tiny_phantom, tmp_path / "mc", uncertainty="emap"))
    cfg = _cfg(tiny_phantom, tmp_path / "tta", sampler="tta")
    assert cfg.samples == 8
    tta = runs.run(cfg)
    assert _trained(tta) == [("", True)]
    assert [r.detail for r in tta.stages if r.stage == "predict"] == ["tta T=8 one-pass", "tta T=8"]
    assert not any(r.from_store for r in tta.stages if r.stage == "predict")


@pytest.mark.parametrize(("kw", "message"), [
    ({"sampler": "nope"}, "unknown sampler 'nope'"),
    ({"sampler": "ensemble:0"}, "sampler 'ensemble:0': bad arguments: the member count M must be a whole number"),
    ({"sampler": "ensemble:x"}, "sampler 'ensemble:x': bad arguments"),
    ({"sampler": "ensemble:3:dropout"}, "may only be 'mc'"),
    ({"sampler": "ensemble:1"}, "uncertainty map 'bmap' needs T > 1 samples; sampler 'ensemble:1' draws one"),
    ({"sampler": "tta", "samples": 5}, "--samples 5: sampler 'tta' always draws 8 samples"),
    ({"uncertainty": "emap", "samples": 3}, "--samples 3: uncertainty map 'emap' reads one prediction"),
])
def test_a_sampler_that_does_not_fit_is_refused_by_name_before_any_work(
        tiny_phantom: Path, tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _cfg(tiny_phantom, tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_a_sampler_that_turns_slices_is_refused_for_a_net_trained_keeping_their_orientation(
        tiny_phantom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drn = type(registry().create("segmenter", "drn"))
    own = drn.recipe
    monkeypatch.setattr(drn, "recipe", lambda self, profile: replace(own(self, profile), max_turn=15.0))
    with pytest.raises(UsageError, match=r"--sampler tta: it turns the slices by quarter turns, but segmenter "
                                         r"'drn' was trained keeping their orientation \(its quick recipe's "
                                         r"max_turn 15 degrees\)"):
        _cfg(tiny_phantom, tmp_path / "out", sampler="tta")
    assert not (tmp_path / "out").exists()
    assert _cfg(tiny_phantom, tmp_path / "out", sampler="mc-dropout").recipe.max_turn == 15.0
    assert _cfg(tiny_phantom, tmp_path / "out", sampler="ensemble:3").recipe.max_turn == 15.0


def test_a_sampler_declaring_turns_as_no_bool_is_blamed_by_name(
        tiny_phantom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(registry().create("sampler", "tta")), "turns", 1)
    with pytest.raises(PluginError, match=r"sampler 'tta' \(uqbench .*\) has a bad declaration: turns must be "
                                          r"True or False, not 1"):
        _cfg(tiny_phantom, tmp_path / "out", sampler="tta")


def test_ensemble_mc_draws_members_times_the_maps_samples(tiny_phantom: Path, tmp_path: Path) -> None:
    assert _cfg(tiny_phantom, tmp_path, sampler="ensemble:3:mc").samples == 30  # bmap's T = 10 per member
    assert _cfg(tiny_phantom, tmp_path, sampler="ensemble:3:mc", samples=4).samples == 12
    assert _cfg(tiny_phantom, tmp_path, sampler="ensemble:3:mc", uncertainty="emap").samples == 3
