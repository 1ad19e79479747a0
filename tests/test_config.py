"""A run's typed settings: resolved once, written to config.json and read back as the same values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uqbench import config
from uqbench.api import Profile, Recipe
from uqbench.config import RunConfig
from uqbench.data.preprocess import PreprocessParams
from uqbench.errors import DataError
from uqbench.kinds import DATASET, DETECTOR, LOSS
from uqbench.protocol.failures import SEED_CODE, FailureRule


def _resolve(tmp_path: Path, **kw: object) -> RunConfig:
    args: dict[str, object] = dict(segmenter="drn", uncertainty="bmap", detector="sresnet:5", loss=None, data=None,
                                   dataset="acdc", folds=[0, 1], profile="quick", samples=None, device="cpu", seed=3,
                                   out=tmp_path / "run", failure_preset="seed-code", precision="fp32")
    args.update(kw)
    return config.resolve(**args)  # type: ignore[arg-type]  (the keywords above are resolve()'s)


def test_settings_are_typed_values(tmp_path: Path) -> None:
    cfg = _resolve(tmp_path, iterations=7)
    assert cfg.profile is Profile.QUICK and cfg.folds == (0, 1) and cfg.samples == 10
    assert isinstance(cfg.recipe, Recipe) and cfg.recipe.iterations == 7 and cfg.loss == cfg.recipe.loss == "ce"
    assert cfg.preprocess == PreprocessParams() and cfg.protocol.failure_rule == SEED_CODE
    assert cfg.protocol.label == "uqbench+failure-preset=seed-code" and cfg.protocol.correction == "patch"
    assert cfg.method(DETECTOR) == "sresnet:5" and cfg.method(LOSS) == "ce" and cfg.method(DATASET) == "acdc"
    assert cfg.methods() == {"segmenter": "drn", "loss": "ce", "sampler": "mc-dropout", "uncertainty": "bmap",
                             "detector": "sresnet:5", "dataset": "acdc"}


def test_config_json_reads_back_as_the_same_settings(tmp_path: Path) -> None:
    cfg = _resolve(tmp_path, detector=None)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.record() | {"uqbench": "0.1.0", "python": "3.11.7",
                                                "machine": {"cpu": "AMD EPYC", "cuda": None}}))
    assert config.read(path) == cfg
    assert "detector" not in cfg.methods()


def test_the_record_keeps_the_keys_config_json_always_had(tmp_path: Path) -> None:
    record = _resolve(tmp_path).record()
    assert list(record) == ["segmenter", "uncertainty", "detector", "loss", "data", "dataset", "folds", "profile",
                            "samples", "device", "seed", "out", "recipe", "preprocess", "precision", "protocol",
                            "test_data", "sampler"]  # test_data came with --test-data, sampler with --sampler; a
    older = {k: v for k, v in record.items() if k not in ("test_data", "sampler")}  # config.json without them reads
    assert config.RunConfig.from_record(older) == _resolve(tmp_path)
    assert record["profile"] == "quick" and record["folds"] == [0, 1] and record["recipe"]["loss"] == "ce"
    assert record["protocol"]["failure_rule"]["hash"] == SEED_CODE.digest() and record["out"] == str(tmp_path / "run")
    assert record["protocol"]["hash"] == RunConfig.from_record(record).protocol.digest()


def test_a_failure_rule_or_protocol_edited_by_hand_is_refused(tmp_path: Path) -> None:
    record = _resolve(tmp_path).record()
    record["protocol"]["failure_rule"]["outside"] = 9.0  # the hash still names the seed-code rule
    path = tmp_path / "config.json"
    path.write_text(json.dumps(record))
    with pytest.raises(DataError, match=rf"^{path}: malformed run configuration: config\.protocol\.failure_rule: "
                                        r"rule 'seed-code' has hash"):
        config.read(path)
    record = _resolve(tmp_path).record()
    record["protocol"]["myocardial_density"] = 1.04  # the hash still names 1.05
    path.write_text(json.dumps(record))
    with pytest.raises(DataError, match=r"config\.protocol: protocol 'uqbench\+failure-preset=seed-code' has hash"):
        config.read(path)
    with pytest.raises(ValueError, match="definition version 0"):
        FailureRule.from_record(SEED_CODE.record() | {"definition_version": 0})


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["recipe"].update(iterations="ten"), "config.recipe.iterations: expected an integer, got 'ten'"),
    (lambda r: r.update(profile="fast"), "config.profile: 'fast' is not one of 'quick', 'cpu', 'paper'"),
    (lambda r: r["protocol"].update(correction="all"),
     "config.protocol.correction: 'all' is not one of 'patch', 'failures-only'"),
    (lambda r: r.pop("samples"), "config: missing field(s) samples"),
    (lambda r: r.update(colour="red"), "config: unexpected field(s) colour"),
])
def test_a_malformed_config_names_the_field(tmp_path: Path, change: object, message: str) -> None:
    record = _resolve(tmp_path).record()
    change(record)  # type: ignore[operator]  (each parameter is a callable)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(record))
    with pytest.raises(DataError) as err:
        config.read(path)
    assert str(err.value) == f"{path}: malformed run configuration: {message}"


def test_a_missing_config_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"config\.json: missing"):
        config.read(tmp_path / "config.json")
