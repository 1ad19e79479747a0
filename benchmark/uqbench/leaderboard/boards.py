"""Markdown and CSV boards made from entries, never by hand: one board per dataset, profile and protocol preset,
one row per method, ranked by mean foreground Dice after simulated correction (as segmented without a detector).

Everything an entry holds is text a submitter controls (a plugin may be called ``a|b`` or ``<img src=x>``), so
every name is escaped: :func:`md` for markdown table cells, :func:`csv_cell` for spreadsheet formulas.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from uqbench.api import CLASS_NAMES, PHASES
from uqbench.leaderboard.schema import FROC_FALSE_POSITIVES, Entry, Index, boards, fp_key
from uqbench.results.summary import ByPhaseClass

STRUCTURES = CLASS_NAMES[1:]
FROC_SHOWN = "5"
"""The voxel FROC's false positives per volume a board's ranking table shows (all are in the CSV)."""

# Inside a table cell (never at a line's start) only these make markup: emphasis, code, links, strikethrough,
# math, the column bar and the backslash itself; HTML is made inert as entities, line breaks become spaces.
_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_[]|~$"} | {
    "<": "&lt;", ">": "&gt;", "&": "&amp;", "\n": " ", "\r": " ", "\t": " "})


def md(text: str) -> str:
    """``text`` as literal markdown inside a table cell: no markup, no HTML, no column break, one line."""
    return "".join(ch for ch in text if ch.isprintable() or ch in "\n\r\t").translate(_MARKDOWN)


def csv_cell(text: str) -> str:
    """``text`` safe in a spreadsheet: a leading = + - @ (a formula) is quoted with an apostrophe."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


@dataclass(frozen=True, slots=True, kw_only=True)
class _Column:
    """One numeric column: its heading, how to read it from an entry, whether more is better, the digits shown."""

    heading: str
    value: Callable[[Entry], float | None]
    higher: bool
    digits: int
    sd: Callable[[Entry], float | None] | None = None  # shown as "mean ± sd"


def _stat(metric: str, phase: str, cls: str, part: str) -> Callable[[Entry], float | None]:
    """Reads ``results.<metric>[phase][cls].<part>`` ("mean" or "sd"); None where the table is absent."""
    def value(e: Entry) -> float | None:
        table: ByPhaseClass | None = getattr(e.results, metric)
        return None if table is None else float(getattr(table[phase][cls], part))
    return value


def _mean_hd(corrected: bool) -> Callable[[Entry], float | None]:
    def value(e: Entry) -> float | None:
        t = e.results.hd_corrected if corrected else e.results.hd
        return None if t is None else sum(t[p][c].mean for p in PHASES for c in STRUCTURES) / (2 * len(STRUCTURES))
    return value


def _mae(corrected: bool, index: str) -> Callable[[Entry], float | None]:
    def value(e: Entry) -> float | None:
        t = e.results.clinical_corrected if corrected else e.results.clinical
        return None if t is None or index not in t else t[index].mae
    return value


RANKING = [
    _Column(heading="Dice", value=lambda e: e.results.mean_foreground_dice, higher=True, digits=3),
    _Column(heading="Dice corrected", value=lambda e: e.results.mean_foreground_dice_corrected, higher=True, digits=3),
    _Column(heading="HD mm", value=_mean_hd(False), higher=False, digits=2),
    _Column(heading="HD mm corrected", value=_mean_hd(True), higher=False, digits=2),
    _Column(heading="slice AP", value=lambda e: e.results.slice_ap, higher=True, digits=3),
    _Column(heading=f"sensitivity @{FROC_SHOWN} FP",
            value=lambda e: (e.results.froc_sensitivity or {}).get(FROC_SHOWN), higher=True, digits=3),
    _Column(heading="effort AUC", value=lambda e: e.results.effort_auc_slices, higher=True, digits=3),
    _Column(heading="AURC", value=lambda e: e.results.aurc, higher=False, digits=4),
    _Column(heading="e-AURC", value=lambda e: e.results.e_aurc, higher=False, digits=4),
    _Column(heading="ECE", value=lambda e: e.results.ece, higher=False, digits=4),
]

HELD_OUT = [
    _Column(heading="test Dice", value=lambda e: e.results.test_mean_foreground_dice, higher=True, digits=3),
    _Column(heading="test Dice corrected", value=lambda e: e.results.test_mean_foreground_dice_corrected,
            higher=True, digits=3),
]
"""Shown when a row of the board scored a held-out test set (--test-data); never ranked by."""


def _per_structure(metric: str, higher: bool, digits: int) -> list[_Column]:
    """Per phase and structure, the segmentation-only column, then the corrected one."""
    return [_Column(heading=f"{phase} {cls}{label}", value=_stat(metric + suffix, phase, cls, "mean"),
                    higher=higher, digits=digits, sd=_stat(metric + suffix, phase, cls, "sd"))
            for phase in PHASES for cls in STRUCTURES for suffix, label in (("", ""), ("_corrected", " corr."))]


def ranks(entries: Sequence[Entry]) -> list[int]:
    """Competition ranks (1, 2, 2, 4) by :attr:`Entry.ranking_dice` rounded to the 3 digits shown."""
    scores = [round(e.ranking_dice, 3) for e in entries]
    return [1 + sum(s > mine for s in scores) for mine in scores]


def ordered(entries: Sequence[Entry]) -> list[tuple[int, Entry]]:
    """The rows of a board: (rank, entry), best first, ties by method."""
    return sorted(zip(ranks(entries), entries, strict=True), key=lambda r: (r[0], r[1].key))


def _best(columns: Sequence[_Column], entries: Sequence[Entry]) -> list[float | None]:
    out: list[float | None] = []
    for c in columns:
        values = [round(v, c.digits) for e in entries if (v := c.value(e)) is not None]
        out.append((max(values) if c.higher else min(values)) if values else None)
    return out


def _cell(value: float | None, digits: int, best: float | None, *, sd: float | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{value:.{digits}f}"
    if best is not None and round(value, digits) == best:
        text = f"**{text}**"
    return text if sd is None else f"{text} ± {sd:.{digits}f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def method_label(e: Entry) -> str:
    """Segmenter, map and detector, with the loss, as one escaped cell."""
    m = e.method
    return md(f"{m.segmenter.spec} · {m.uncertainty.spec} · {m.detector.spec if m.detector else 'none'} "
              f"({m.loss.spec})")


def _report_link(e: Entry, root: Path) -> str:
    report = Path("reports") / e.file_stem / "report.md"
    return f"[report]({report.as_posix()})" if (root / report).is_file() else ""


def _provenance(rank: int, e: Entry) -> str:
    m, c, s = e.method, e.cost, e.software
    methods = ", ".join(md(f"{k} {x.spec} ({x.distribution} {x.version})") for k, x in
                        (("segmenter", m.segmenter), ("loss", m.loss), ("map", m.uncertainty),
                         ("detector", m.detector)) if x is not None)
    commit = f" {s.git_commit[:10]}" if s.git_commit else ""
    device = md(f"{c.device} ({c.device_name or 'unknown'}, {c.precision}, {c.cpu_threads} CPU threads)")
    stages = ", ".join(f"{md(k)} {v:.0f}" for k, v in c.device_s.items())
    line = (f"{rank}. {method_label(e)}: {methods}; uqbench {md(s.uqbench)}{md(commit)}, torch {md(s.torch)}; "
            f"{device}; T={e.samples}, seed {e.seed}; device-seconds {stages} (total {sum(c.device_s.values()):.0f}; "
            f"wall {sum(c.wall_s.values()):.0f} s)")
    if e.external:
        line += "; external predictions"
    if e.note:
        line += f"; note: {md(e.note)}"
    return line


def markdown(name: str, entries: Sequence[Entry], root: Path) -> str:
    """One board as markdown; ``root`` is the leaderboards folder (for links to committed reports)."""
    rows = ordered(entries)
    first = rows[0][1]
    lines = [f"# {md(first.dataset.name)}, profile {md(first.profile)}, protocol {md(first.protocol.label)} "
             f"({md(first.protocol.hash)})", "",
             f"Generated by `uqbench leaderboard` from `leaderboards/entries/{name}--*.json`; do not edit. "
             f"Dataset fingerprint `{md(first.dataset.fingerprint[:16])}`, {first.dataset.volumes} volumes, "
             f"4-fold cross-validation (fold split `{md(first.fold_split[:16])}`). Ranked by mean foreground Dice "
             "after simulated correction (as segmented for rows without a detector); best value per column in bold. "
             "Dice and HD are means over volumes (± sd in the tables below); HD in mm, over both phases and the "
             f"three structures; sensitivity: failure voxels detected at {FROC_SHOWN} false-positive patches per "
             "volume; effort AUC: mean Dice against the share of slices inspected.", ""]
    entries_in_order = [e for _, e in rows]
    ranking = RANKING + (HELD_OUT if any(e.results.test_volumes for e in entries_in_order) else [])
    if ranking is not RANKING:
        lines[-1:-1] = ["Test columns: a held-out test set (`--test-data`) segmented by the model of every training "
                        "patient, corrected with the detector fitted on every cross-validation prediction; not "
                        "ranked by."]
    best = _best(ranking, entries_in_order)
    head = ["rank", "segmenter", "loss", "map", "detector", "precision", *[c.heading for c in ranking], "report"]
    body = []
    for rank, e in rows:
        m = e.method
        body.append([str(rank), md(m.segmenter.spec), md(m.loss.spec), md(m.uncertainty.spec),
                     md(m.detector.spec) if m.detector else "none", md(e.cost.precision),
                     *[_cell(c.value(e), c.digits, b) for c, b in zip(ranking, best, strict=True)],
                     _report_link(e, root)])
    lines += ["## Ranking", "", *_table(head, body), ""]
    for title, metric, higher, digits in (("Dice per phase and structure", "dice", True, 3),
                                          ("Hausdorff distance (mm) per phase and structure", "hd", False, 1)):
        columns = _per_structure(metric, higher, digits)
        best = _best(columns, entries_in_order)
        body = [[str(rank), method_label(e), *[_cell(c.value(e), c.digits, b, sd=c.sd(e) if c.sd else None)
                                                for c, b in zip(columns, best, strict=True)]] for rank, e in rows]
        lines += [f"## {title}", "", "Segmentation only, then after simulated correction (corr.): mean ± sd.", "",
                  *_table(["rank", "method", *[c.heading for c in columns]], body), ""]
    indices = list(first.results.clinical_units)
    columns = [_Column(heading=f"{i} MAE{' corr.' if fixed else ''}", value=_mae(fixed, i), higher=False, digits=1)
               for i in indices for fixed in (False, True)]
    best = _best(columns, entries_in_order)
    body = []
    for rank, e in rows:
        cells = []
        for c, b, (i, fixed) in zip(columns, best, ((i, f) for i in indices for f in (False, True)), strict=True):
            table = e.results.clinical_corrected if fixed else e.results.clinical
            agreement: Index | None = None if table is None else table.get(i)
            cell = _cell(c.value(e), c.digits, b)
            if agreement is not None:
                cell += f" (r {agreement.r:.2f})" if agreement.r is not None else " (r -)"
            cells.append(cell)
        body.append([str(rank), method_label(e), *cells])
    units = ", ".join(f"{md(i)} in {md(u)}" for i, u in first.results.clinical_units.items())
    lines += ["## Clinical indices", "", f"Mean absolute error against the reference (Pearson r): {units}.", "",
              *_table(["rank", "method", *[md(c.heading) for c in columns]], body), "",
              "## Provenance", "", *[_provenance(rank, e) for rank, e in rows], ""]
    return "\n".join(lines)


def csv(entries: Sequence[Entry]) -> str:
    """One board's rows as CSV: every figure an entry holds, flat, in ranking order."""
    records = []
    for rank, e in ordered(entries):
        m, r = e.method, e.results
        row: dict[str, object] = {"rank": rank}
        for kind, x in (("segmenter", m.segmenter), ("loss", m.loss), ("uncertainty", m.uncertainty),
                        ("detector", m.detector)):
            row[kind] = csv_cell(x.spec) if x else "none"
            row[f"{kind}_distribution"] = csv_cell(f"{x.distribution} {x.version}") if x else ""
        row["mean_foreground_dice"] = r.mean_foreground_dice
        row["mean_foreground_dice_corrected"] = r.mean_foreground_dice_corrected
        for metric in ("dice", "hd"):
            for suffix in ("", "_corrected"):
                table: ByPhaseClass | None = getattr(r, metric + suffix)
                for phase in PHASES:
                    for cls in STRUCTURES:
                        stat = None if table is None else table[phase][cls]
                        row[f"{metric}{suffix}_{phase}_{cls}_mean"] = None if stat is None else stat.mean
                        row[f"{metric}{suffix}_{phase}_{cls}_sd"] = None if stat is None else stat.sd
        for suffix, clinical in (("", r.clinical), ("_corrected", r.clinical_corrected)):
            for index in r.clinical_units:
                a = None if clinical is None else clinical.get(index)
                row[f"{index}{suffix}_mae"] = None if a is None else a.mae
                row[f"{index}{suffix}_r"] = None if a is None else a.r
        row |= {"aurc": r.aurc, "e_aurc": r.e_aurc, "ece": r.ece, "brier": r.brier, "slice_ap": r.slice_ap}
        for fp in FROC_FALSE_POSITIVES:
            key = fp_key(fp)
            row[f"sensitivity_at_{key}_fp"] = (r.froc_sensitivity or {}).get(key)
        row |= {"test_volumes": r.test_volumes, "test_mean_foreground_dice": r.test_mean_foreground_dice,
                "test_mean_foreground_dice_corrected": r.test_mean_foreground_dice_corrected}
        row |= {"effort_auc_slices": r.effort_auc_slices, "effort_auc_patches": r.effort_auc_patches,
                "device": e.cost.device, "device_name": csv_cell(e.cost.device_name or ""),
                "precision": e.cost.precision, "cpu_threads": e.cost.cpu_threads,
                "device_s": round(sum(e.cost.device_s.values()), 1), "wall_s": round(sum(e.cost.wall_s.values()), 1),
                "samples": e.samples, "seed": e.seed, "uqbench": csv_cell(e.software.uqbench),
                "git_commit": e.software.git_commit or "", "torch": csv_cell(e.software.torch),
                "external": e.external, "note": csv_cell(e.note or "")}
        records.append(row)
    buffer = io.StringIO()
    pd.DataFrame(records).to_csv(buffer, index=False, float_format="%.6g", lineterminator="\n")
    return buffer.getvalue()


def render(entries: Sequence[Entry], root: Path) -> dict[str, str]:
    """Every board file the entries make: file name under ``root`` -> its text."""
    out: dict[str, str] = {}
    for name, on in sorted(boards(entries).items()):
        out[f"{name}.md"] = markdown(name, on, root)
        out[f"{name}.csv"] = csv(on)
    return out


def stale(root: Path, made: dict[str, str]) -> list[str]:
    """Board files under ``root`` that no entry makes any more (the README is not a board)."""
    return sorted(p.name for p in [*root.glob("*.md"), *root.glob("*.csv")]
                  if p.name not in made and p.name != "README.md")
