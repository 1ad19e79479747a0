"""Markdown and CSV boards made from entries, never by hand: one board per dataset, profile and protocol preset,
with one ranked table per question (``uqbench.leaderboard.ranking``): segmentation, uncertainty, and detection
and correction, each beside the harness's baselines and with bootstrap intervals.

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
from uqbench.leaderboard.bootstrap import Estimate
from uqbench.leaderboard.ranking import (
    QUESTIONS,
    RULES,
    Question,
    Row,
    draws_of,
    mean_volume,
    normalised_aucc,
    rows,
)
from uqbench.leaderboard.schema import FROC_FALSE_POSITIVES, Entry, Index, boards, fp_key
from uqbench.results.summary import ByPhaseClass

STRUCTURES = CLASS_NAMES[1:]

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


def _per_structure(metric: str, higher: bool, digits: int) -> list[_Column]:
    """Per phase and structure, the segmentation-only column, then the corrected one."""
    return [_Column(heading=f"{phase} {cls}{label}", value=_stat(metric + suffix, phase, cls, "mean"),
                    higher=higher, digits=digits, sd=_stat(metric + suffix, phase, cls, "sd"))
            for phase in PHASES for cls in STRUCTURES for suffix, label in (("", ""), ("_corrected", " corr."))]


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
    """Segmenter, sampler, map and detector, with the loss, as one escaped cell."""
    m = e.method
    return md(f"{m.segmenter.spec} · {m.sampler.spec} · {m.uncertainty.spec} · "
              f"{m.detector.spec if m.detector else 'none'} ({m.loss.spec})")


def _report_link(e: Entry, root: Path) -> str:
    report = Path("reports") / e.file_stem / "report.md"
    return f"[report]({report.as_posix()})" if (root / report).is_file() else ""


def _provenance(rank: int, e: Entry) -> str:
    m, c, s = e.method, e.cost, e.software
    methods = ", ".join(md(f"{k} {x.spec} ({x.distribution} {x.version})") for k, x in
                        (("segmenter", m.segmenter), ("loss", m.loss), ("sampler", m.sampler), ("map", m.uncertainty),
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


def _ci(e: Estimate, digits: int) -> str:
    return f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]"


def _seeds(e: Estimate, digits: int) -> str:
    return str(e.seeds) if e.seeds == 1 else f"{e.seeds} (sd {e.seed_sd:.{digits}f})"


def _figure(value: float | None, digits: int, scale: float = 1.0) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{scale * value:.{digits}f}"


def _rank_cells(r: Row) -> list[str]:
    if r.rank is None or r.median_rank is None:
        return ["baseline", "-"]
    median, low, high = r.median_rank
    return [str(r.rank), f"{median:g} [{low:g}, {high:g}]"]


def _method_cells(r: Row, *, detector: bool) -> list[str]:
    cells = [md(x) for x in r.method[:4]]
    if detector:
        cells.append(f"*{md(r.baseline)}*" if r.baseline else md(r.method[4]))
    elif r.baseline:
        cells[-1] += f" · *{md(r.baseline)}*"
    return cells


def _segmentation(rows: Sequence[Row], *, held_out: bool) -> list[str]:
    head = ["rank", "median rank [95 %]", "segmenter", "loss", "sampler", "map", "seeds", "Dice [95 % CI]", "HD mm",
            "precision"]
    body = []
    for r in rows:
        cells = [*_rank_cells(r), *_method_cells(r, detector=False), _seeds(r.primary, 3), _ci(r.primary, 3),
                 _figure(mean_volume(r.entries, lambda v: v.hd), 2), md(r.entries[0].cost.precision)]
        if held_out:
            cells.append(_figure(r.entries[0].results.test_mean_foreground_dice, 3))
        body.append(cells)
    return _table(head + (["test Dice"] if held_out else []), body)


def _uncertainty(rows: Sequence[Row]) -> list[str]:
    head = ["rank", "median rank [95 %]", "segmenter", "loss", "sampler", "map", "seeds", "e-AURC [95 % CI]",
            "voxel e-AURC", "ECE"]
    body = [[*_rank_cells(r), *_method_cells(r, detector=False), _seeds(r.primary, 4), _ci(r.primary, 4),
             "-" if r.baseline else _figure(_mean_of(r.entries, lambda e: e.results.e_aurc), 4),
             "-" if r.baseline else _figure(_mean_of(r.entries, lambda e: e.results.ece), 4)] for r in rows]
    return _table(head, body)


def _detection(rows: Sequence[Row], budget: int, root: Path) -> list[str]:
    head = ["rank", "median rank [95 %]", "segmenter", "loss", "sampler", "map", "detector", "seeds",
            f"AUCC@{budget} [95 % CI]", "nAUCC", "flagged / vol", "FP / vol", "gain over random", "Dice corrected",
            "failing slices %", "slice AP", *[f"sens. @{fp_key(fp)} FP" for fp in FROC_FALSE_POSITIVES], "report"]
    body = []
    for r in rows:
        cells = [*_rank_cells(r), *_method_cells(r, detector=True), _seeds(r.primary, 3), _ci(r.primary, 3)]
        if r.baseline:
            body.append(cells + ["-"] * (len(head) - len(cells)))
            continue
        gain = mean_volume(r.entries, lambda v: None if v.dice_flagged is None or v.dice_random_flagged is None
                           else v.dice_flagged - v.dice_random_flagged)
        cells += [_figure(normalised_aucc(r.entries), 3), _figure(mean_volume(r.entries, lambda v: v.flagged), 1),
                  _figure(mean_volume(r.entries, lambda v: v.false_positives), 1), _figure(gain, 3),
                  _figure(mean_volume(r.entries, lambda v: v.dice_flagged), 3),
                  _figure(_mean_of(r.entries, lambda e: e.results.failure_slice_share), 1, scale=100),
                  _figure(_mean_of(r.entries, lambda e: e.results.slice_ap), 3),
                  *[_figure(_mean_of(r.entries, _sensitivity(fp_key(fp))), 3) for fp in FROC_FALSE_POSITIVES],
                  _report_link(r.entries[0], root)]
        body.append(cells)
    return _table(head, body)


def _sensitivity(false_positives: str) -> Callable[[Entry], float | None]:
    def value(e: Entry) -> float | None:
        return (e.results.froc_sensitivity or {}).get(false_positives)
    return value


def _mean_of(entries: Sequence[Entry], value: Callable[[Entry], float | None]) -> float | None:
    """An entry figure's mean over a row's seeds (None where one lacks it)."""
    values = [value(e) for e in entries]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None) / len(values)


Ranked = dict[Question, list[Row]]


def questions(entries: Sequence[Entry]) -> Ranked:
    """Each question's rows for one board's entries, from one set of draws."""
    by_stem = sorted(entries, key=lambda e: e.file_stem)
    draws = draws_of(by_stem)
    return {q: rows(by_stem, q, draws) for q in QUESTIONS}


def markdown(name: str, entries: Sequence[Entry], root: Path, *, ranked: Ranked) -> str:
    """One board as markdown; ``root`` is the leaderboards folder (for links to committed reports)."""
    by_stem = sorted(entries, key=lambda e: e.file_stem)
    first = by_stem[0]
    patients = len({v.patient for v in first.results.per_volume})
    p = first.protocol
    lines = [f"# {md(first.dataset.name)}, profile {md(first.profile)}, protocol {md(p.label)} ({md(p.hash)})", "",
             f"Generated by `uqbench leaderboard` from `leaderboards/entries/{name}--*.json`; do not edit. "
             f"Dataset fingerprint `{md(first.dataset.fingerprint[:16])}`, {first.dataset.volumes} volumes of "
             f"{patients} patients, 4-fold cross-validation (fold split `{md(first.fold_split[:16])}`).",
             "",
             f"Intervals: 95 % percentile intervals of {p.bootstrap_resamples:,} paired bootstrap resamples of "
             f"patients (seed {p.bootstrap_seed}; a patient's ED and ES together; the same draws for every row; a row "
             "of several seeds shows their mean and sd, and draws its seeds too). Rank: in the order of value, the "
             "best remaining row and the rows after it, down to the first whose 95 % interval of the paired "
             "difference to it excludes 0, share one rank (so no row ranks below one of worse value); median rank: "
             "over the resamples. Baselines are computed by the harness for each segmentation and are not ranked.", ""]
    sections: list[tuple[Question, str]] = [("segmentation", "Segmentation"), ("uncertainty", "Uncertainty"),
                                            ("detection", "Detection and correction")]
    for question, title in sections:
        made = ranked[question]
        if not made:
            continue
        lines += [f"## {title}", "", f"{RULES[question][0].upper()}{RULES[question][1:]}.", ""]
        if question == "segmentation":
            lines += _segmentation(made, held_out=any(e.results.test_volumes for e in by_stem))
        elif question == "uncertainty":
            lines += _uncertainty(made)
        else:
            lines += [f"B = {p.budget} patches per volume. nAUCC = (AUCC - random) / (oracle - random). At the "
                      "operating point (p > 0.5): patches flagged and false-positive patches (holding no failure "
                      "voxel) per volume, the Dice they buy minus what as many random patches buy, and the Dice after "
                      "correcting them (shown, never ranked by). Failing slices: the share of a volume's slices "
                      "that hold a failure, averaged over volumes (the paper's Table III reports 35-58 %; '-': an "
                      "entry made before it was recorded). Slice AP: slices needing correction; sensitivity: "
                      "failure voxels found at 1, 2, 5 and 10 false-positive patches per volume.", "",
                      *_detection(made, p.budget, root)]
        lines.append("")
    lines += _details(by_stem)
    return "\n".join(lines)


def _details(entries: Sequence[Entry]) -> list[str]:
    """Per phase and structure, clinical indices and provenance, one line per entry (method and seed)."""
    lines: list[str] = []
    numbered = list(enumerate(entries, start=1))
    for title, metric, higher, digits in (("Dice per phase and structure", "dice", True, 3),
                                          ("Hausdorff distance (mm) per phase and structure", "hd", False, 1)):
        columns = _per_structure(metric, higher, digits)
        best = _best(columns, entries)
        body = [[str(i), _entry_label(e), *[_cell(c.value(e), c.digits, b, sd=c.sd(e) if c.sd else None)
                                            for c, b in zip(columns, best, strict=True)]] for i, e in numbered]
        lines += [f"## {title}", "", "Each entry (method and seed), segmentation only, then after simulated correction "
                  "at the operating point (corr.): mean ± sd over volumes; best in bold.", "",
                  *_table(["#", "method", *[c.heading for c in columns]], body), ""]
    indices = list(entries[0].results.clinical_units)
    columns = [_Column(heading=f"{i} MAE{' corr.' if fixed else ''}", value=_mae(fixed, i), higher=False, digits=1)
               for i in indices for fixed in (False, True)]
    best = _best(columns, entries)
    body = []
    for i, e in numbered:
        cells = []
        for c, b, (index, fixed) in zip(columns, best, ((x, f) for x in indices for f in (False, True)), strict=True):
            table = e.results.clinical_corrected if fixed else e.results.clinical
            agreement: Index | None = None if table is None else table.get(index)
            cell = _cell(c.value(e), c.digits, b)
            if agreement is not None:
                cell += f" (r {agreement.r:.2f})" if agreement.r is not None else " (r -)"
            cells.append(cell)
        body.append([str(i), _entry_label(e), *cells])
    units = ", ".join(f"{md(i)} in {md(u)}" for i, u in entries[0].results.clinical_units.items())
    return [*lines, "## Clinical indices", "", f"Mean absolute error against the reference (Pearson r): {units}.",
            "", *_table(["#", "method", *[md(c.heading) for c in columns]], body), "",
            "## Provenance", "", *[_provenance(i, e) for i, e in numbered], ""]


def _entry_label(e: Entry) -> str:
    return f"{method_label(e)}, seed {e.seed}"

def ranking_csv(ranked: Ranked) -> str:
    """Every question's rows as CSV: rank, method or baseline, the primary figure with its interval and seeds."""
    records = []
    for question, made in ranked.items():
        for r in made:
            records.append({
                "question": question, "rank": r.rank, "median_rank": r.median_rank[0] if r.median_rank else None,
                "rank_low": r.median_rank[1] if r.median_rank else None,
                "rank_high": r.median_rank[2] if r.median_rank else None,
                "segmenter": csv_cell(r.method[0]), "loss": csv_cell(r.method[1]), "sampler": csv_cell(r.method[2]),
                "uncertainty": csv_cell(r.method[3]), "detector": csv_cell(r.method[4]) if len(r.method) > 4 else "",
                "baseline": r.baseline or "",
                "value": r.primary.value, "low": r.primary.low, "high": r.primary.high, "seeds": r.primary.seeds,
                "seed_sd": r.primary.seed_sd})
    buffer = io.StringIO()
    pd.DataFrame(records).to_csv(buffer, index=False, float_format="%.6g", lineterminator="\n")
    return buffer.getvalue()


def csv(entries: Sequence[Entry]) -> str:
    """One board's entries as CSV: every figure an entry holds, flat, one row per entry (method and seed)."""
    records = []
    for e in sorted(entries, key=lambda e: e.file_stem):
        m, r = e.method, e.results
        row: dict[str, object] = {}
        for kind, x in (("segmenter", m.segmenter), ("loss", m.loss), ("sampler", m.sampler),
                        ("uncertainty", m.uncertainty), ("detector", m.detector)):
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
        row |= {"aurc": r.aurc, "e_aurc": r.e_aurc, "ece": r.ece, "brier": r.brier, "slice_ap": r.slice_ap,
                "failure_slice_share": r.failure_slice_share,
                "aucc": mean_volume([e], lambda v: v.aucc), "aucc_random": mean_volume([e], lambda v: v.aucc_random),
                "aucc_oracle": mean_volume([e], lambda v: v.aucc_oracle)}
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
        ranked = questions(on)
        out[f"{name}.md"] = markdown(name, on, root, ranked=ranked)
        out[f"{name}.csv"] = csv(on)
        out[f"{name}.ranking.csv"] = ranking_csv(ranked)
    return out


def stale(root: Path, made: dict[str, str]) -> list[str]:
    """Board files under ``root`` that no entry makes any more (the README is not a board)."""
    return sorted(p.name for p in [*root.glob("*.md"), *root.glob("*.csv")]
                  if p.name not in made and p.name != "README.md")
