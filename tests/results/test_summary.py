"""Typed records: JSON in, the value that was written out; anything else refused with the field's path."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

import pytest

from uqbench.errors import DataError
from uqbench.protocol.stats import Comparison
from uqbench.records import from_json, to_json
from uqbench.results import summary as summaries
from uqbench.results.summary import SUMMARY_VERSION, Scores, Stat


class Colour(StrEnum):
    RED = "red"


@dataclass(frozen=True, kw_only=True)
class Inner:
    stats: dict[str, Stat]
    where: Path


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str
    shape: tuple[int, int]
    folds: tuple[int, ...]
    mode: Literal["patch", "failures-only"]
    colour: Colour
    maybe: float | None = None
    inner: list[Inner] = field(default_factory=list)


def test_a_nested_value_reads_back_from_its_json() -> None:
    value = Outer(name="a", shape=(2, 3), folds=(0, 1, 3), mode="patch", colour=Colour.RED, maybe=None,
                  inner=[Inner(stats={"LV": Stat(mean=0.5, sd=0.0, n=1)}, where=Path("/x/y"))])
    text = json.dumps(to_json(value))
    assert json.loads(text) == {"name": "a", "shape": [2, 3], "folds": [0, 1, 3], "mode": "patch", "colour": "red",
                                "maybe": None, "inner": [{"stats": {"LV": {"mean": 0.5, "sd": 0.0, "n": 1}},
                                                          "where": "/x/y"}]}
    assert from_json(Outer, json.loads(text)) == value


def test_integers_are_read_as_floats_but_not_the_reverse_and_nan_survives() -> None:
    got = from_json(Comparison, {"n": 3, "mann_whitney_p": 1, "wilcoxon_p": math.nan})
    assert isinstance(got.mann_whitney_p, float) and math.isnan(got.wilcoxon_p)
    with pytest.raises(ValueError, match=r"^c\.n: expected an integer, got 3\.0$"):
        from_json(Comparison, {"n": 3.0, "mann_whitney_p": 1, "wilcoxon_p": 1}, "c")
    with pytest.raises(ValueError, match=r"^c\.n: expected an integer, got True$"):
        from_json(Comparison, {"n": True, "mann_whitney_p": 1, "wilcoxon_p": 1}, "c")


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "a", "shape": [2], "folds": [], "mode": "patch", "colour": "red"}, "o.shape: expected 2 items, got 1"),
    ({"name": "a", "shape": [2, 3], "folds": [0, "1"], "mode": "patch", "colour": "red"},
     "o.folds[1]: expected an integer, got '1'"),
    ({"name": "a", "shape": [2, 3], "folds": [], "mode": "all", "colour": "red"},
     "o.mode: 'all' is not one of 'patch', 'failures-only'"),
    ({"name": "a", "shape": [2, 3], "folds": [], "mode": "patch", "colour": "blue"},
     "o.colour: 'blue' is not one of 'red'"),
    ({"name": "a", "shape": [2, 3], "folds": [], "mode": "patch", "colour": "red",
      "inner": [{"stats": {"LV": {"mean": 1, "sd": 0}}, "where": "/"}]}, "o.inner[0].stats.LV: missing field(s) n"),
    ({"name": 1, "shape": [2, 3], "folds": [], "mode": "patch", "colour": "red"}, "o.name: expected str, got int"),
])
def test_a_field_that_does_not_fit_is_named_by_its_path(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        from_json(Outer, data, "o")
    assert str(err.value) == message


def test_scores_give_each_metric_by_name() -> None:
    per = {"ED": {"LV": Stat(mean=0.9, sd=0.01, n=2)}}
    scores = Scores(volumes=2, dice=per, hd=per, hd95=per, hd95_directed_max=per, assd=per, mean_foreground_dice=0.9)
    assert scores.metric("hd95") is per
    with pytest.raises(ValueError, match="unknown metric 'jaccard'"):
        scores.metric("jaccard")  # type: ignore[arg-type]  (a name outside the Metric literal, on purpose)


def test_a_summary_of_another_version_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"summary_version": SUMMARY_VERSION + 1, "cases": 4}))
    with pytest.raises(DataError, match=rf"^{path}: summary version {SUMMARY_VERSION + 1}; this uqbench reads "
                                        rf"version {SUMMARY_VERSION}"):
        summaries.read(path)
    path.write_text(json.dumps({"cases": 4}))  # written before summaries had a version
    with pytest.raises(DataError, match="summary version None"):
        summaries.read(path)
    path.write_text("{")
    with pytest.raises(DataError, match=rf"^{path}: unreadable summary"):
        summaries.read(path)
    with pytest.raises(DataError, match=r"summary\.json: missing"):
        summaries.read(tmp_path / "none" / "summary.json")
