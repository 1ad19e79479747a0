"""`uqbench sweep`: the grid trains and predicts once per segmenter and fold, each cell is an ordinary run folder
with the numbers a plain run gives, a rerun resumes, and every executor (serial, local processes, submitit's
debug and local executors, Slurm through stand-in sbatch/srun/sacct commands) runs the same jobs."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import Cli

from uqbench import executors, sweep

pytestmark = pytest.mark.e2e  # every test here runs the pipeline

GRID = ["--folds", "0,1", "--iterations", "3", "--samples", "2", "--device", "cpu"]


def _options(data: Path) -> dict[str, Any]:
    """The shared run options of a small grid on ``data`` (what the CLI hands sweep.plan)."""
    return sweep.shared_options(folds=[0, 1], data=data, samples=2, device="cpu", iterations=3)


def _sweep_json(out: Path) -> dict[str, dict[str, Any]]:
    return {j["name"]: j["outcome"] for j in json.loads((out / "sweep.json").read_text())["jobs"]}


@pytest.mark.slow
def test_sweep_trains_once_per_fold_and_each_cell_matches_a_plain_run(tiny_phantom: Path, tmp_path: Path,
                                                                      fresh_store: Path, cli: Cli) -> None:
    out = tmp_path / "sweep"
    code, stdout, err = cli("sweep", "--data", str(tiny_phantom), "-u", "emap,bmap", "--detector", "threshold,none",
                            "--sampler", "mc-dropout,tta", *GRID, "--out", str(out))
    assert code == 0, err
    assert "wave 1: 2 train+predict jobs, wave 2: 8 cells" in " ".join(stdout.split())
    # one training per fold for the whole grid (tta draws from the same model), and per sampler the two
    # test-patient predictions (one-pass, samples) per fold
    assert len(list((fresh_store / "stages" / "train").glob("*/manifest.json"))) == 2
    assert len(list((fresh_store / "stages" / "predict").glob("*/manifest.json"))) == 8
    outcomes = _sweep_json(out)
    assert all(o["ok"] for o in outcomes.values())
    for name in (f"drn-{s}-{u}-{d}" for s in ("mc-dropout", "tta") for u in ("emap", "bmap")
                 for d in ("threshold", "none")):
        stages = json.loads((out / name / "stages.json").read_text())["stages"]
        assert all(s["from_store"] for s in stages if s["stage"] in ("train", "predict")), name
    # a cell is an ordinary run folder: the same command as a plain run gives the same numbers
    code, _, err = cli("run", "--data", str(tiny_phantom), "-u", "bmap", "--detector", "threshold", *GRID,
                       "--out", str(tmp_path / "plain"))
    assert code == 0, err
    plain = pd.read_csv(tmp_path / "plain" / "cases.csv")
    pd.testing.assert_frame_equal(plain, pd.read_csv(out / "drn-mc-dropout-bmap-threshold" / "cases.csv"))
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["corrected"] == \
        json.loads((out / "drn-mc-dropout-bmap-threshold" / "summary.json").read_text())["corrected"]
    # a rerun resumes: every stage from the store
    code, stdout, err = cli("sweep", "--data", str(tiny_phantom), "-u", "emap,bmap", "--detector", "threshold,none",
                            "--sampler", "mc-dropout,tta", *GRID, "--out", str(out))
    assert code == 0, err
    assert all(o["computed"] == 0 and o["from_store"] > 0 for o in _sweep_json(out).values())


@pytest.mark.slow
def test_a_sweep_with_test_data_trains_the_test_model_once_and_every_cell_scores_the_test_set(
        tiny_phantom: Path, held_out_phantom: Path, tmp_path: Path, fresh_store: Path, cli: Cli) -> None:
    out = tmp_path / "sweep"
    code, _, err = cli("sweep", "--data", str(tiny_phantom), "--test-data", str(held_out_phantom), "-u",
                       "emap,maxprob", "--detector", "threshold", *GRID, "--out", str(out))
    assert code == 0, err
    # folds 0 and 1, and the one model of every training patient that both cells read
    assert len(list((fresh_store / "stages" / "train").glob("*/manifest.json"))) == 3
    held_out = []
    for name in ("drn-mc-dropout-emap-threshold", "drn-mc-dropout-maxprob-threshold"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["test"] is not None and (out / name / "test" / "cases.csv").is_file(), name
        stages = json.loads((out / name / "stages.json").read_text())["stages"]
        held_out += [s for s in stages if s["stage"] == "train" and s["fold"] == -1]
    # both cells read one stage: the first cell trained it, the second found it in the store
    assert len({s["key"] for s in held_out}) == 1 and [s["from_store"] for s in held_out] == [False, True]
    cases = pd.read_csv(out / "drn-mc-dropout-emap-threshold" / "test" / "cases.csv")
    assert set(cases["patient"]) == {"patient101", "patient102"}


def _install_broken_segmenter(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party segmenter (a real distribution on sys.path) whose network cannot be built."""
    site.mkdir()
    (site / "uqbench_broken.py").write_text(textwrap.dedent('''
        import uqbench
        from uqbench import Profile, Recipe, Register, Segmenter

        class Broken:
            """A segmenter whose network never fits in memory."""

            name = "broken"
            size_multiple = 1

            def build(self, *, in_channels, num_classes, dropout, width=1.0):
                raise RuntimeError("CUDA out of memory (a stand-in)")

            def recipe(self, profile: Profile) -> Recipe:
                return Recipe(loss="ce", iterations=3, batch_size=2, patch_size=32, learning_rate=1e-3,
                              lr_decay_every=1000)

        @uqbench.hookimpl
        def register_segmenters(register: Register[Segmenter]) -> None:
            register(Broken)
    '''))
    info = site / "uqbench_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: uqbench-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[uqbench]\nbroken = uqbench_broken\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("UQBENCH_PLUGINS", "uqbench,uqbench-broken")
    monkeypatch.delitem(sys.modules, "uqbench_broken", raising=False)
    from uqbench.registry import reset

    reset()


@pytest.mark.slow
def test_failed_job_is_reported_with_its_log_and_the_rest_finish(tiny_phantom: Path, tmp_path: Path,
                                                                 fresh_store: Path, cli: Cli,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _install_broken_segmenter(tmp_path / "site", monkeypatch)
    out = tmp_path / "sweep"
    code, stdout, err = cli("sweep", "--data", str(tiny_phantom), "-s", "broken,drn", "-u", "emap",
                            "--detector", "threshold", *GRID, "--out", str(out))
    assert code == 2
    assert err.startswith(f"error: sweep {out}: 3 of 6 jobs did not finish") and len(err.splitlines()) == 1
    flat = " ".join(stdout.split())
    log = out / "logs" / "train_predict_broken_fold_0.log"
    assert "failed train+predict broken fold 0: segmenter 'broken'" in flat and f"log: {log}" in flat
    assert "CUDA out of memory (a stand-in)" in log.read_text() and "Traceback" in log.read_text()
    assert "skipped broken-mc-dropout-emap-threshold: skipped: train+predict broken fold 0 failed" in flat
    outcomes = _sweep_json(out)
    cell = "drn-mc-dropout-emap-threshold"
    assert outcomes[cell]["ok"] and (out / cell / "summary.json").is_file()


@pytest.mark.slow
def test_local_executor_runs_jobs_as_processes_each_with_its_own_gpu(tiny_phantom: Path, tmp_path: Path,
                                                                     fresh_store: Path) -> None:
    p = sweep.plan(segmenters=["drn"], uncertainties=["emap"], detectors=["threshold"],
                   options=_options(tiny_phantom), out=tmp_path / "sweep")
    # two "GPUs" to share out (the jobs themselves run on the CPU: --device cpu)
    outcomes = sweep.run(p, executors.Local(gpus=["0", "1"], gpus_per_job=1))
    assert all(o.ok for o in outcomes), outcomes
    first_wave = {o.visible_devices for o in outcomes[:2]}
    assert first_wave == {"0", "1"}  # the two folds' jobs ran at once, each seeing one GPU
    assert all(o.host and o.log and Path(o.log).is_file() for o in outcomes)
    assert (tmp_path / "sweep" / "drn-mc-dropout-emap-threshold" / "summary.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["debug", "local"])
def test_submitit_executors_run_the_sweep(cluster: str, tiny_phantom: Path, tmp_path: Path,
                                         fresh_store: Path) -> None:
    submitit = pytest.importorskip("submitit")
    executor = (submitit.DebugExecutor if cluster == "debug" else submitit.LocalExecutor)(folder=tmp_path / "jobs")
    p = sweep.plan(segmenters=["drn"], uncertainties=["emap"], detectors=["threshold"],
                   options=_options(tiny_phantom), out=tmp_path / "sweep")
    outcomes = sweep.run(p, executors.Submitit(executor))
    assert [o.name for o in outcomes] == ["train+predict drn fold 0", "train+predict drn fold 1",
                                          "drn-mc-dropout-emap-threshold"]
    assert all(o.ok for o in outcomes), outcomes
    assert outcomes[-1].from_store > 0
    assert (tmp_path / "sweep" / "drn-mc-dropout-emap-threshold" / "cases.csv").is_file()


STANDIN = {
    # sbatch: run the batch script in the background as the next job id; its state goes where sacct reads it
    "sbatch": r'''#!/bin/bash
        dir="$STANDIN_SLURM"; mkdir -p "$dir"
        n=$(( $(cat "$dir/counter" 2>/dev/null || echo 100) + 1 )); echo "$n" > "$dir/counter"
        echo "$@" > "$dir/$n.args"
        echo RUNNING > "$dir/$n.state"
        ( export SLURM_JOB_ID=$n SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 SLURM_PROCID=0 SLURM_LOCALID=0 \
                 SLURM_NTASKS=1 SLURM_JOB_NODELIST=standin
          if bash "${@: -1}" >/dev/null 2>&1; then echo COMPLETED > "$dir/$n.state"
          else echo FAILED > "$dir/$n.state"; fi ) >/dev/null 2>&1 &
        echo "Submitted batch job $n"
    ''',
    # srun: run the command with its output and error files (%j the job id, %t the task); a job named in
    # STANDIN_FAIL dies the way an out-of-memory kill does
    "srun": r'''#!/bin/bash
        out=/dev/null; err=/dev/null
        while [[ "$1" == --* ]]; do
          case "$1" in --output) out="$2"; shift 2;; --error) err="$2"; shift 2;; *) shift;; esac
        done
        out=${out//%j/$SLURM_JOB_ID}; out=${out//%t/0}; err=${err//%j/$SLURM_JOB_ID}; err=${err//%t/0}
        if [[ " $STANDIN_FAIL " == *" $SLURM_JOB_ID "* ]]; then
          echo "slurmstepd: error: Detected 1 oom_kill event in StepId=$SLURM_JOB_ID.0" >> "$err"; exit 137
        fi
        exec "$@" >> "$out" 2>> "$err"
    ''',
    "sacct": r'''#!/bin/bash
        echo "JobID|State|NodeList"
        while [ $# -gt 0 ]; do
          if [ "$1" = -j ]; then echo "$2|$(cat "$STANDIN_SLURM/$2.state")|standin"; shift; fi; shift
        done
    ''',
    "scancel": r'''#!/bin/bash
        echo CANCELLED > "$STANDIN_SLURM/${@: -1}.state"
    ''',
}


@pytest.fixture
def standin_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Stand-in Slurm commands first on PATH; returns the folder where they keep the job states."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in STANDIN.items():
        path = bin_dir / name
        path.write_text(textwrap.dedent(script))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_SLURM", str(tmp_path / "slurm-state"))
    return tmp_path / "slurm-state"


@pytest.mark.slow
def test_slurm_executor_submits_through_sbatch_reports_a_killed_job_and_resumes(
        tiny_phantom: Path, tmp_path: Path, fresh_store: Path, cli: Cli, standin_slurm: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(tiny_phantom), "-u", "emap", "--detector", "threshold", *GRID, "--out", str(out),
            "--executor", "slurm", "--slurm-partition", "gpu-a100", "--gpus-per-job", "2", "--timeout-min", "30"]
    monkeypatch.setenv("STANDIN_FAIL", "102")  # the second job (fold 1) is killed
    code, stdout, err = cli(*args)
    assert code == 2 and "2 of 3 jobs did not finish" in err.replace("\n", " ")
    flat = " ".join(stdout.split())
    log = out / "slurm" / "102_0_log.err"
    assert "failed train+predict drn fold 1: Slurm job 102 ended FAILED" in flat and f"log: {log}" in flat
    assert "oom_kill" in log.read_text()
    assert "done train+predict drn fold 0" in flat  # the other job finished
    script = (standin_slurm / "101.args").read_text().split()[-1]
    sbatch = Path(script).read_text()
    assert "#SBATCH --partition=gpu-a100" in sbatch and "#SBATCH --gpus-per-node=2" in sbatch
    assert "#SBATCH --time=30" in sbatch
    # the rerun submits again and finds fold 0's stages in the store
    monkeypatch.setenv("STANDIN_FAIL", "")
    code, stdout, err = cli(*args)
    assert code == 0, err
    outcomes = _sweep_json(out)
    assert outcomes["train+predict drn fold 0"]["computed"] == 0 and outcomes["train+predict drn fold 1"]["computed"]
    assert outcomes["drn-mc-dropout-emap-threshold"]["ok"]


def test_unknown_executor_is_refused(cli: Cli) -> None:
    code, _, err = cli("sweep", "--executor", "kubernetes")
    assert code == 2 and err.strip() == "error: --executor 'kubernetes': expected one of serial, local, slurm"


def test_slurm_without_submitit_names_the_extra(cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    code, _, err = cli("sweep", "--executor", "slurm", "--out", str(tmp_path / "s"))
    assert code == 2 and err.strip() == "error: --executor slurm needs submitit: pip install 'uqbench[slurm]'"
    assert not (tmp_path / "s").exists()


def test_a_bad_method_in_the_grid_is_refused_before_any_work(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("sweep", "-u", "emap,nope", "--out", str(tmp_path / "s"))
    assert code == 2 and "uncertainty" in err and "'nope'" in err
    code, _, err = cli("sweep", "-u", "emap,emap", "--out", str(tmp_path / "s"))
    assert code == 2 and err.strip() == "error: --uncertainty: emap given twice"
    assert not (tmp_path / "s").exists()


def test_a_cell_folder_holding_other_settings_is_refused_before_any_work(cli: Cli, tmp_path: Path,
                                                                        tiny_phantom: Path, fresh_store: Path) -> None:
    cell = tmp_path / "s" / "drn-mc-dropout-emap-threshold"
    cell.mkdir(parents=True)
    (cell / "config.json").write_text(json.dumps({"segmenter": "drn", "seed": 7}))
    code, _, err = cli("sweep", "--data", str(tiny_phantom), "-u", "emap", "--detector", "threshold", *GRID,
                       "--out", str(tmp_path / "s"))
    assert code == 2 and err.startswith(f"error: --out {cell}: holds a run with other settings (")
    assert not (fresh_store / "stages").exists()  # nothing trained
