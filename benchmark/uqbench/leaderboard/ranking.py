"""The three questions a board answers, each ranked by its own figure with intervals (issue 26):

- segmentation: mean foreground Dice (higher is better);
- uncertainty: volume-level e-AURC, each volume's risk 1 - Dice against its map's mean over its predicted
  foreground (lower is better; ``uqbench.protocol.budget``);
- detection and correction: AUCC@B, the mean Dice over the first B patches corrected in the detector's order
  (higher is better), beside the harness's baselines for the same segmentation: no correction, the protocol's
  random order, and the oracle order.

A row is a method (its segmenter, loss, sampler, map and, for detection, detector) over every seed it posted.
The segmentation and uncertainty of a method do not depend on its detector, so their rows are the methods'
distinct segmenter, loss, sampler and map (the segmentation is the arg-max of the samples' mean). Intervals,
median ranks and shared ranks come from ``uqbench.leaderboard.bootstrap``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from uqbench.leaderboard import bootstrap
from uqbench.leaderboard.schema import Entry
from uqbench.protocol import budget
from uqbench.results.summary import VolumeValues

Question = Literal["segmentation", "uncertainty", "detection"]
QUESTIONS: tuple[Question, ...] = ("segmentation", "uncertainty", "detection")

RULES: dict[Question, str] = {
    "segmentation": "ranked by mean foreground Dice (RV, MYO, LV; higher is better)",
    "uncertainty": "ranked by volume-level e-AURC: volumes referred most uncertain first, each volume's risk "
                   "1 - Dice, its uncertainty the map's mean over its predicted foreground (lower is better)",
    "detection": "ranked by AUCC@B: mean Dice over the first 0..B patches of each volume corrected in the "
                 "detector's order (higher is better; flagging more patches cannot raise it)",
}
HIGHER: dict[Question, bool] = {"segmentation": True, "uncertainty": False, "detection": True}


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One row of one question: a method (over its seeds) or a baseline of the harness."""

    question: Question
    method: tuple[str, ...]  # segmenter, loss, sampler, map (and detector for detection) specs
    baseline: str | None  # None for a method; else the baseline's name
    entries: list[Entry]  # one per seed
    primary: bootstrap.Estimate
    rank: int | None = None  # shared rank; None for a baseline
    median_rank: tuple[float, float, float] | None = None  # median and its interval


Figure = Callable[[Entry], bootstrap.Statistic | None]


def _per_volume(e: Entry) -> list[VolumeValues]:
    return e.results.per_volume


def _patients(e: Entry) -> list[str]:
    return [v.patient for v in _per_volume(e)]


def _mean(field: Callable[[VolumeValues], float | None]) -> Figure:
    """The mean over volumes of a per-volume field (None where an entry lacks it)."""
    def figure(e: Entry) -> bootstrap.Statistic | None:
        values = [field(v) for v in _per_volume(e)]
        present = [float(x) for x in values if x is not None]
        return bootstrap.mean_of(present) if len(present) == len(values) else None
    return figure


def _e_aurc(constant: bool) -> Figure:
    """Volume-level e-AURC of the entry's map (``constant``: of a score that ranks nothing, the random baseline)."""
    def figure(e: Entry) -> bootstrap.Statistic | None:
        scores = [v.uncertainty for v in _per_volume(e)]
        if any(s is None for s in scores):
            return None
        s = np.zeros(len(scores)) if constant else np.array(scores, dtype=np.float64)
        risk = np.array([1 - v.dice for v in _per_volume(e)])

        def stat(w: np.ndarray) -> np.ndarray:
            out = []
            for weights in w.astype(np.int64):
                kept = np.repeat(np.arange(len(risk)), weights)
                out.append(budget.excess_aurc(s[kept], risk[kept]))
            return np.array(out)
        return stat
    return figure


PRIMARY: dict[Question, Figure] = {
    "segmentation": _mean(lambda v: v.dice),
    "uncertainty": _e_aurc(False),
    "detection": _mean(lambda v: v.aucc),
}
BASELINES: dict[Question, list[tuple[str, Figure]]] = {
    "segmentation": [],
    "uncertainty": [("random", _e_aurc(True))],
    "detection": [("no correction", _mean(lambda v: v.dice)), ("random order", _mean(lambda v: v.aucc_random)),
                  ("oracle order", _mean(lambda v: v.aucc_oracle))],
}


def _groups(entries: Sequence[Entry], question: Question) -> dict[tuple[str, ...], list[Entry]]:
    """Entries by the method a question ranks, one per seed, in seed order."""
    out: dict[tuple[str, ...], dict[int, Entry]] = {}
    for e in sorted(entries, key=lambda e: e.file_stem):
        if question == "detection" and e.method.detector is None:
            continue
        key = e.key if question == "detection" else e.key[:4]
        out.setdefault(key, {}).setdefault(e.seed, e)  # the same segmentation under several detectors: once
    return {k: [v[s] for s in sorted(v)] for k, v in sorted(out.items())}


def _estimate(figure: Figure, entries: Sequence[Entry], *, draws: bootstrap.Draws, row: str
              ) -> bootstrap.Estimate | None:
    stats = [(figure(e), _patients(e)) for e in entries]
    if any(s is None for s, _ in stats):
        return None
    return bootstrap.estimate([(s, p) for s, p in stats if s is not None], draws, row=row)


def rows(entries: Sequence[Entry], question: Question, draws: bootstrap.Draws) -> list[Row]:
    """The question's rows: its methods ranked best first, then its baselines (one set per segmentation)."""
    methods: list[Row] = []
    baselines: list[Row] = []
    groups = _groups(entries, question)
    for key, group in groups.items():
        name = "\0".join((question, *key))
        primary = _estimate(PRIMARY[question], group, draws=draws, row=name)
        if primary is None:  # no map (predictions scored without one): not on the uncertainty board
            continue
        methods.append(Row(question=question, method=key, baseline=None, entries=group, primary=primary))
    for key, group in groups.items():
        segmentation = key[:4]
        if any(b.method == segmentation for b in baselines):
            continue
        for label, figure in BASELINES[question]:
            made = _estimate(figure, group, draws=draws, row="\0".join((question, label, *segmentation)))
            if made is not None:
                baselines.append(Row(question=question, method=segmentation, baseline=label, entries=group,
                                     primary=made))
    higher = HIGHER[question]
    shared = bootstrap.shared_ranks([r.primary for r in methods], higher=higher)
    medians = bootstrap.rank_summary([r.primary.samples for r in methods], higher=higher) if methods else []
    ranked = [Row(question=r.question, method=r.method, baseline=None, entries=r.entries, primary=r.primary,
                  rank=rank, median_rank=median) for r, rank, median in zip(methods, shared, medians, strict=True)]
    sign = 1 if higher else -1
    ranked.sort(key=lambda r: (r.rank, -sign * r.primary.value, r.method))
    return ranked + baselines


def normalised_aucc(group: Sequence[Entry]) -> float:
    """nAUCC of a method over its seeds' volumes: (AUCC - random) / (oracle - random) of the means."""
    per = [v for e in group for v in _per_volume(e)]
    return budget.normalised(float(np.mean([v.aucc for v in per if v.aucc is not None])),
                             float(np.mean([v.aucc_random for v in per])), float(np.mean([v.aucc_oracle for v in per])))


def mean_volume(group: Sequence[Entry], field: Callable[[VolumeValues], float | int | None]) -> float | None:
    """A per-volume field's mean over every seed's volumes (None where an entry lacks it)."""
    values = [field(v) for e in group for v in _per_volume(e)]
    return None if any(x is None for x in values) else float(np.mean([float(x) for x in values if x is not None]))


def draws_of(entries: Sequence[Entry]) -> bootstrap.Draws:
    """The board's draws: its patients, its protocol's resamples and seed (every entry of a board agrees)."""
    first = entries[0]
    return bootstrap.draw(_patients(first), resamples=first.protocol.bootstrap_resamples,
                          seed=first.protocol.bootstrap_seed)
