"""`uqbench submit` and `uqbench leaderboard`: entries from real runs of a third-party plugin (the example, whose own
recipe is tiny, so a 4-fold run is submittable: the `example_runs` fixture), every refusal, the boards, their
escaping and `--check`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uqbench.leaderboard import boards, schema, submission
from uqbench.protocol.detection import Froc


def _entry_files(board_dir: Path) -> list[Path]:
    return sorted((board_dir / "entries").glob("*.json"))


@pytest.mark.usefixtures("example_plugin")
def test_submitted_runs_make_a_ranked_board_that_check_accepts(example_runs: Path, tmp_path: Path, cli) -> None:
    lb = tmp_path / "leaderboards"
    for run, extra in (("full", ["--report"]), ("maxprob", [])):
        code, out, err = cli("submit", str(example_runs / run), "--leaderboards", str(lb), *extra)
        assert code == 0, err
        assert "wrote" in out
    files = _entry_files(lb)
    assert [f.name for f in files] == [
        "example-folder-quick-uqbench--example-net-example-l2-mc-dropout-example-maxvar-example-everywhere--seed0.json",
        "example-folder-quick-uqbench--example-net-example-l2-mc-dropout-maxprob-example-everywhere--seed0.json"]
    record = json.loads(files[0].read_text())
    summary = json.loads((example_runs / "full" / "summary.json").read_text())
    assert record["schema_version"] == schema.SCHEMA_VERSION
    assert record["method"]["segmenter"] == {"spec": "example-net", "distribution": "uqbench-example",
                                             "version": "0.1.0"}
    assert record["results"]["mean_foreground_dice_corrected"] == summary["corrected"]["mean_foreground_dice"]
    assert record["results"]["dice"]["ES"]["LV"] == summary["segmentation"]["dice"]["ES"]["LV"]
    assert record["fold_split"] == summary["provenance"]["fold_split"] and record["folds"] == [0, 1, 2, 3]
    assert record["protocol"]["hash"] == summary["protocol"]["hash"]
    assert record["protocol"]["budget"] == summary["protocol"]["budget"]
    per_volume = record["results"]["per_volume"]
    assert len(per_volume) == record["dataset"]["volumes"]
    assert np.mean([v["dice"] for v in per_volume]) == pytest.approx(summary["segmentation"]["mean_foreground_dice"])
    assert np.mean([v["dice_flagged"] for v in per_volume]) == \
        pytest.approx(summary["corrected"]["mean_foreground_dice"])
    train = sum(s["device_s"] for s in summary["stages"] if s["stage"] == "train")
    assert record["cost"]["device_s"]["train"] == pytest.approx(train, abs=0.1)

    code, out, err = cli("leaderboard", "--leaderboards", str(lb))
    assert code == 0, err
    board = (lb / "example-folder-quick-uqbench.md").read_text()
    table = pd.read_csv(lb / "example-folder-quick-uqbench.csv")
    assert list(table["uncertainty"]) == ["example-maxvar", "maxprob"]
    ranking = pd.read_csv(lb / "example-folder-quick-uqbench.ranking.csv", keep_default_na=False)
    for question in ("segmentation", "uncertainty", "detection"):
        rows = ranking[(ranking["question"] == question) & (ranking["baseline"] == "")]
        assert sorted(rows["uncertainty"]) == ["example-maxvar", "maxprob"]
        assert ((rows["low"] <= rows["value"]) & (rows["value"] <= rows["high"])).all()
        assert f"## {question.capitalize()}" in board or question == "detection"
    baselines = ranking[ranking["baseline"] != ""]
    assert sorted(baselines[baselines["question"] == "detection"]["baseline"]) == \
        sorted(["no correction", "random order", "oracle order"] * 2)  # one set per segmentation (two maps)
    assert "## Detection and correction" in board and "*oracle order*" in board
    assert "protocol uqbench (" + record["protocol"]["hash"] + ")" in board.splitlines()[0]
    assert "uqbench-example 0.1.0" in board  # the provenance line names the distribution
    report = f"reports/{files[0].stem}/report.md"
    assert (lb / report).is_file() and not list((lb / report).parent.glob("*example*"))  # not the phantom reader
    assert board.count("[report](") == 1 and f"[report]({report})" in board  # only the row that has one
    assert cli("leaderboard", "--check", "--leaderboards", str(lb))[0] == 0

    (lb / "example-folder-quick-uqbench.md").write_text(board.replace("| 1 |", "| 2 |", 1))
    code, out, _ = cli("leaderboard", "--check", "--leaderboards", str(lb))
    assert code == 1 and "example-folder-quick-uqbench.md" in out
    (lb / "old-board.md").write_text("# gone\n")
    cli("leaderboard", "--leaderboards", str(lb))
    assert not (lb / "old-board.md").exists()
    assert cli("leaderboard", "--check", "--leaderboards", str(lb))[0] == 0


@pytest.mark.usefixtures("example_plugin")
@pytest.mark.parametrize(("run", "reason"), [
    ("smoke", r"ran with overridden iterations 3 \(the quick recipe has 20\)"),
    ("two-folds", r"ran folds 0,1; an entry needs all folds 0..3"),
    ("two-samples", r"ran with --samples 2; map 'example-maxvar' under sampler 'mc-dropout' is defined with T=4"),
])
def test_submit_refuses_a_smoke_partial_fold_or_other_sample_count_run(example_runs: Path, tmp_path: Path, cli,
                                                                       run: str, reason: str) -> None:
    code, _, err = cli("submit", str(example_runs / run), "--leaderboards", str(tmp_path / "lb"))
    assert code == 2 and re.search(reason, err) and str(example_runs / run) in err
    assert not (tmp_path / "lb").exists()


@pytest.mark.usefixtures("example_plugin")
def test_submit_refuses_a_failed_or_unfinished_run(example_runs: Path, tmp_path: Path, cli) -> None:
    run = tmp_path / "run"
    shutil.copytree(example_runs / "full", run)
    (run / "summary.json").unlink()  # a run that failed or was stopped never writes its summary
    code, _, err = cli("submit", str(run), "--leaderboards", str(tmp_path / "lb"))
    assert code == 2 and "not a finished run" in err and "summary.json: missing" in err
    code, _, err = cli("submit", str(tmp_path / "nothing"), "--leaderboards", str(tmp_path / "lb"))
    assert code == 2 and "config.json: missing (not a run folder)" in err


@pytest.mark.usefixtures("example_plugin")
@pytest.mark.parametrize(("damage", "says"), [
    (lambda run: (run / "detection.csv").unlink(), "detection.csv: missing (the run or evaluation did not finish)"),
    (lambda run: (run / "config.json").write_text((run / "config.json").read_text().replace(
        '"profile": "quick"', '"profile": "paper"')), "summary.json and config.json describe different runs"),
])
def test_submit_refuses_a_run_folder_whose_files_disagree(example_runs: Path, tmp_path: Path, cli, damage,
                                                          says: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(example_runs / "full", run)
    damage(run)
    code, _, err = cli("submit", str(run), "--leaderboards", str(tmp_path / "lb"))
    assert code == 2 and says in err


@pytest.mark.usefixtures("example_plugin")
def test_submit_refuses_a_run_whose_cases_do_not_match_its_summary(example_runs: Path, tmp_path: Path, cli) -> None:
    run = tmp_path / "run"
    shutil.copytree(example_runs / "full", run)
    cases = pd.read_csv(run / "cases.csv")
    cases[cases["patient"] != cases["patient"].iloc[0]].to_csv(run / "cases.csv", index=False)
    code, _, err = cli("submit", str(run), "--leaderboards", str(tmp_path / "lb"))
    assert code == 2 and "cases.csv: 18 rows of 6 volumes, where summary.json scored 8 volumes" in err


@pytest.mark.usefixtures("example_plugin")
def test_submit_refuses_another_protocol_split_or_data_on_one_board(example_runs: Path, tmp_path: Path, cli) -> None:
    lb = tmp_path / "lb"
    assert cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))[0] == 0
    first = _entry_files(lb)[0]
    original = first.read_text()
    for field, value, says in ((("protocol", "hash"), "0123456789ab", "protocol uqbench has hash"),
                               (("protocol", "budget"), 7, "protocol's budget is 50"),
                               (("protocol", "bootstrap_seed"), 3, "protocol's bootstrap seed is 0"),
                               (("fold_split",), "f" * 64, "fold split is"),
                               (("dataset", "fingerprint"), "e" * 64, "dataset fingerprint is")):
        record = json.loads(original)
        where = record
        for part in field[:-1]:
            where = where[part]
        where[field[-1]] = value  # the board's entry as another uqbench, split or dataset would have made it
        record["digest"] = schema.digest(record)
        first.write_text(json.dumps(record))
        code, _, err = cli("submit", str(example_runs / "maxprob"), "--leaderboards", str(lb))
        assert code == 2 and says in err and f"where {first.name} has" in err and "cannot share a board" in err
    assert len(_entry_files(lb)) == 1


@pytest.mark.usefixtures("example_plugin")
def test_check_refuses_entries_of_another_budget_or_an_old_schema_naming_the_files(example_runs: Path,
                                                                                   tmp_path: Path, cli) -> None:
    lb = tmp_path / "lb"
    for run in ("full", "maxprob"):
        assert cli("submit", str(example_runs / run), "--leaderboards", str(lb))[0] == 0
    first, second = _entry_files(lb)
    record = json.loads(second.read_text())
    record["protocol"]["budget"] = 35  # as a preset of another B would have made it
    record["digest"] = schema.digest(record)
    second.write_text(json.dumps(record))
    code, _, err = cli("leaderboard", "--check", "--leaderboards", str(lb))
    assert code == 2 and str(second) in err and f"budget is 35 where {first.name} has 50" in err
    del record["results"]["per_volume"]
    record["schema_version"] = 2  # an entry made before per-volume values
    record["digest"] = schema.digest(record)
    second.write_text(json.dumps(record))
    code, _, err = cli("leaderboard", "--check", "--leaderboards", str(lb))
    assert code == 2 and str(second) in err and "holds no per-volume values" in err and "uqbench submit" in err


@pytest.mark.usefixtures("example_plugin")
def test_a_second_seed_of_a_method_joins_its_row(example_runs: Path, tmp_path: Path, cli) -> None:
    lb = tmp_path / "lb"
    assert cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))[0] == 0
    (path,) = _entry_files(lb)
    record = json.loads(path.read_text())
    record["seed"] = 1  # what a run with --seed 1 posts (its numbers shifted as retraining would)
    for v in record["results"]["per_volume"]:
        v["dice"] = min(1.0, v["dice"] + 0.02)
    record["digest"] = schema.digest(record)
    entry = schema.parse(record, "test")
    (lb / "entries" / f"{entry.file_stem}.json").write_text(json.dumps(record))
    assert cli("leaderboard", "--leaderboards", str(lb))[0] == 0
    ranking = pd.read_csv(lb / "example-folder-quick-uqbench.ranking.csv", keep_default_na=False)
    seg = ranking[(ranking["question"] == "segmentation") & (ranking["baseline"] == "")]
    assert list(seg["seeds"]) == [2] and seg["seed_sd"].iloc[0] == pytest.approx(0.02 / np.sqrt(2), abs=2e-3)
    board = (lb / "example-folder-quick-uqbench.md").read_text()
    assert "| 2 (sd 0.0" in board and ", seed 1 |" in board


@pytest.mark.usefixtures("example_plugin")
def test_submit_refuses_the_same_method_twice_unless_replaced(example_runs: Path, tmp_path: Path, cli) -> None:
    lb = tmp_path / "lb"
    assert cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))[0] == 0
    code, _, err = cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))
    assert code == 2 and "already has this method with seed 0 (fp32; --replace to replace it" in err
    code, _, err = cli("submit", str(example_runs / "full"), "--note", "second try", "--replace",
                       "--leaderboards", str(lb))
    assert code == 0, err
    assert json.loads(_entry_files(lb)[0].read_text())["note"] == "second try"


@pytest.mark.usefixtures("example_plugin")
def test_submit_refuses_a_note_of_more_than_one_line(example_runs: Path, tmp_path: Path, cli) -> None:
    code, _, err = cli("submit", str(example_runs / "full"), "--note", "one\ntwo",
                       "--leaderboards", str(tmp_path / "lb"))
    assert code == 2 and "--note: one line" in err


@pytest.mark.usefixtures("example_plugin")
@pytest.mark.parametrize(("edit", "says"), [
    (lambda r: r.pop("cost"), "missing field(s) cost"),
    (lambda r: r.update(extra=1), "unexpected field(s) extra"),
    (lambda r: r["results"].update(ece="low"), "entry.results.ece: expected a number"),
    (lambda r: r["results"].update(aurc=float("nan")), "entry.results.aurc: nan is not a finite number"),
    (lambda r: r["results"].update(slice_ap=None), "present exactly when a detector is"),
    (lambda r: r.update(folds=[0, 1]), "an entry covers all folds"),
    (lambda r: r.update(schema_version=0), "entry schema version 0"),
])
def test_leaderboard_check_refuses_an_entry_that_breaks_the_schema(example_runs: Path, tmp_path: Path, cli, edit,
                                                                  says: str) -> None:
    lb = tmp_path / "lb"
    assert cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))[0] == 0
    assert cli("leaderboard", "--leaderboards", str(lb))[0] == 0
    path = _entry_files(lb)[0]
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    code, _, err = cli("leaderboard", "--check", "--leaderboards", str(lb))
    assert code == 2 and str(path) in err and says in err


@pytest.mark.usefixtures("example_plugin")
def test_a_hand_edited_number_is_refused_by_name_not_posted(example_runs: Path, tmp_path: Path, cli) -> None:
    lb = tmp_path / "lb"
    assert cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))[0] == 0
    assert cli("leaderboard", "--leaderboards", str(lb))[0] == 0
    path = _entry_files(lb)[0]
    record = json.loads(path.read_text())
    record["results"]["mean_foreground_dice"] += 0.01  # well typed, consistent, and not what was measured
    path.write_text(json.dumps(record, indent=1))
    for command in (("leaderboard", "--check"), ("leaderboard",)):
        code, _, err = cli(*command, "--leaderboards", str(lb))
        assert code == 2 and str(path) in err and "the digest differs: edited by hand?" in err


@pytest.mark.usefixtures("example_plugin")
def test_precision_is_a_board_column_and_replacing_across_precisions_says_so(example_runs: Path, tmp_path: Path,
                                                                           cli) -> None:
    lb = tmp_path / "lb"
    assert cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))[0] == 0
    path = _entry_files(lb)[0]
    record = json.loads(path.read_text())
    record["cost"]["precision"] = "bf16"  # the board's row as a bf16 run of the same method would have made it
    record["digest"] = schema.digest(record)
    path.write_text(json.dumps(record, indent=1))
    assert cli("leaderboard", "--leaderboards", str(lb))[0] == 0
    board = next(lb.glob("*.md")).read_text()
    assert "| HD mm | precision |" in board and " | bf16 |" in board
    code, out, err = cli("submit", str(example_runs / "full"), "--replace", "--leaderboards", str(lb))
    assert code == 0, err
    assert f"replaced {path.name}: its bf16 row becomes this fp32 run's" in " ".join(out.split())


HOSTILE = {"segmenter": "a|b", "uncertainty": "<img src=x onerror=alert(1)>", "detector": "**bold** [x](y) `c`",
           "loss": "=cmd|' /C calc'!A0"}


@pytest.mark.usefixtures("example_plugin")
def test_hostile_names_and_notes_cannot_break_a_table_or_inject_markup(example_runs: Path, tmp_path: Path, cli) -> None:
    lb = tmp_path / "lb"
    assert cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))[0] == 0
    path = _entry_files(lb)[0]
    record = json.loads(path.read_text())
    for kind, name in HOSTILE.items():
        record["method"][kind]["spec"] = name
        record["method"][kind]["distribution"] = name
    record["note"] = "| </table> <script>x</script> $x$ ~~y~~"
    record["digest"] = schema.digest(record)  # as `uqbench submit` would have written it for these names
    entry = schema.parse(record, "test")
    path.unlink()
    (lb / "entries" / f"{entry.file_stem}.json").write_text(json.dumps(record))
    assert cli("leaderboard", "--leaderboards", str(lb))[0] == 0
    board = (lb / "example-folder-quick-uqbench.md").read_text()
    for bad in ("<img", "<script", "</table>", "**bold**", "[x](y)", "`c`", "$x$", "~~y~~"):
        assert bad not in board
    tables, rows = [], []  # each table's rows: consecutive lines that start with a bar
    for line in [*board.splitlines(), ""]:
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            tables.append(rows)
            rows = []
    assert len(tables) == 6  # segmentation, uncertainty, detection; Dice, HD and clinical details
    for rows in tables:  # every row has its header's columns
        assert {_columns(r) for r in rows} == {_columns(rows[0])}, rows
    table = pd.read_csv(lb / "example-folder-quick-uqbench.csv")
    assert table.loc[0, "segmenter"] == "a|b" and table.loc[0, "loss"] == "'" + HOSTILE["loss"]
    assert cli("leaderboard", "--check", "--leaderboards", str(lb))[0] == 0


def _columns(line: str) -> int:
    """Cells in a markdown table row: bars that are not escaped, less one."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_markdown_escaping_keeps_text_literal() -> None:
    assert boards.md("a|b") == "a\\|b"
    assert boards.md("<img src=x>") == "&lt;img src=x&gt;"
    assert boards.md("**b** _i_ `c` [l](u) ~~s~~ $m$ \\") == \
        "\\*\\*b\\*\\* \\_i\\_ \\`c\\` \\[l\\](u) \\~\\~s\\~\\~ \\$m\\$ \\\\"
    assert boards.md("one\ntwo\x00") == "one two"
    assert boards.csv_cell("=1+1") == "'=1+1" and boards.csv_cell("drn") == "drn"


def test_froc_sensitivity_is_the_best_at_or_below_the_false_positives() -> None:
    froc = Froc(convention="pooled", threshold=[0.0, 0.3, 0.6, 1.0], sensitivity=[1.0, 0.8, 0.5, 0.0],
                false_positives_per_volume=[12.0, 5.0, 1.5, 0.0])
    assert [submission.froc_sensitivity(froc, fp) for fp in (1, 2, 5, 10, 20)] == [0.0, 0.5, 0.8, 0.8, 1.0]


@pytest.mark.usefixtures("example_plugin")
def test_test_set_columns_appear_only_on_a_board_with_a_held_out_result(example_runs: Path, tmp_path: Path,
                                                                         cli) -> None:
    lb = tmp_path / "lb"
    code, _, err = cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))
    assert code == 0, err
    assert cli("leaderboard", "--leaderboards", str(lb))[0] == 0
    (board,) = lb.glob("*.md")
    assert "test Dice" not in board.read_text()
    path = _entry_files(lb)[0]
    record = json.loads(path.read_text())
    record["results"] |= {"test_volumes": 100, "test_mean_foreground_dice": 0.8771,
                          "test_mean_foreground_dice_corrected": None}
    record["digest"] = schema.digest(record)  # as `uqbench submit` writes an entry with a test set
    path.write_text(json.dumps(record))
    assert cli("leaderboard", "--leaderboards", str(lb))[0] == 0
    segmentation = board.read_text().split("## Segmentation")[1].splitlines()
    head, row = segmentation[4], segmentation[6]
    assert head.split(" | ")[-2:] == ["precision", "test Dice |"]
    assert row.split(" | ")[-1] == "0.877 |"
    assert pd.read_csv(board.with_suffix(".csv")).loc[0, "test_mean_foreground_dice"] == 0.8771


@pytest.mark.usefixtures("example_plugin")
def test_failing_slices_column_shows_the_runs_share_and_a_dash_for_an_entry_without_it(example_runs: Path,
                                                                                        tmp_path: Path, cli) -> None:
    lb = tmp_path / "lb"
    assert cli("submit", str(example_runs / "full"), "--leaderboards", str(lb))[0] == 0
    summary = json.loads((example_runs / "full" / "summary.json").read_text())
    share = summary["detection_curves"]["slices"]["share_of_slices_with_failures_per_volume"]
    path = _entry_files(lb)[0]
    record = json.loads(path.read_text())
    assert record["results"]["failure_slice_share"] == share

    def cell() -> str:
        assert cli("leaderboard", "--leaderboards", str(lb))[0] == 0
        lines = (lb / "example-folder-quick-uqbench.md").read_text().split("## Detection and correction")[1]
        head, row = (next(x.split(" | ") for x in lines.splitlines() if x.startswith(start))
                     for start in ("| rank", "| 1 |"))
        return row[head.index("failing slices %")]

    assert cell() == f"{100 * share:.1f}"
    del record["results"]["failure_slice_share"]  # an entry made before the share was recorded
    record["digest"] = schema.digest(record)
    path.write_text(json.dumps(record))
    assert cell() == "-"
    assert cli("leaderboard", "--check", "--leaderboards", str(lb))[0] == 0
