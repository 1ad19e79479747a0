"""`uqbench submit` (a finished run -> one entry file) and `uqbench leaderboard` (entries -> boards)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uqbench.cli.app import app, console
from uqbench.files import write_atomic
from uqbench.leaderboard import boards, schema, submission

Leaderboards = Annotated[Path, typer.Option(
    "--leaderboards", help="The leaderboards folder: entries/ and the boards made from them.")]


@app.command("submit")
def submit_cmd(
    run: Annotated[Path, typer.Argument(help="A finished run folder (all folds, the methods' own recipes).")],
    *,
    note: Annotated[str | None, typer.Option(
        "--note", help=f"One line shown with the row (at most {schema.NOTE_LIMIT} characters; escaped).")] = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Replace the board's entry of the same method and seed.")] = False,
    report: Annotated[bool, typer.Option(
        "--report", help="Also write the run's report to leaderboards/reports/<entry>/, which the board links "
                         "(example slices only of the phantom: real images are never committed); needs "
                         "pip install 'uqbench\\[report]'.")] = False,
    leaderboards: Leaderboards = Path("leaderboards"),
) -> None:
    """Check a finished run and write its entry to leaderboards/entries/ (then run `uqbench leaderboard`)."""
    entry = submission.from_run(run, note=note)
    path, replaced = submission.write(leaderboards / "entries", entry, replace_existing=replace)
    if replaced is not None:
        change = (f": its {replaced.cost.precision} row becomes this {entry.cost.precision} run's"
                  if replaced.cost.precision != entry.cost.precision else "")
        console.print(f"replaced {path.name}{change} (mean foreground Dice "
                      f"{replaced.results.mean_foreground_dice:.3f} before)", markup=False, highlight=False,
                      soft_wrap=True)
    if report:
        from uqbench.report import build

        folder = leaderboards / "reports" / entry.file_stem
        build([run], folder, examples=entry.dataset.name == "phantom")
        console.print(f"wrote the report {folder / 'report.md'}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"wrote {path} (board {entry.board}: mean foreground Dice {entry.results.mean_foreground_dice:.3f}"
                  + (f", corrected {entry.results.mean_foreground_dice_corrected:.3f}"
                     if entry.results.mean_foreground_dice_corrected is not None else "")
                  + "); now run `uqbench leaderboard`", markup=False, highlight=False)


@app.command("leaderboard")
def leaderboard_cmd(
    check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 when the boards differ from what the entries make.")] = False,
    leaderboards: Leaderboards = Path("leaderboards"),
) -> None:
    """Make every board (markdown and CSV) from leaderboards/entries/: one per dataset, profile and protocol."""
    made = boards.render(schema.read_all(leaderboards / "entries"), leaderboards)
    old = boards.stale(leaderboards, made)
    if check:
        differ = [name for name, text in made.items()
                  if not (leaderboards / name).is_file() or (leaderboards / name).read_text() != text]
        if differ or old:
            console.print(f"leaderboards out of date: {', '.join(differ + old)} (run `uqbench leaderboard`)",
                          markup=False, highlight=False)
            raise typer.Exit(1)
        console.print(f"{_boards(made)} board(s) match their entries", markup=False, highlight=False)
        return
    for name, text in made.items():
        _write_text(leaderboards / name, text)
    for name in old:
        (leaderboards / name).unlink()
    console.print(f"wrote {_boards(made)} board(s) under {leaderboards}"
                  + (f"; removed {', '.join(old)}" if old else ""), markup=False, highlight=False)


def _boards(made: dict[str, str]) -> int:
    return sum(name.endswith(".md") for name in made)


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))
