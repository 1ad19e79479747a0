"""A sweep: the grid segmenters x samplers x uncertainty maps x detectors, planned as the deduplicated stage
graph of all its runs and executed in two waves on an executor.

Wave 1 trains and predicts: one job per segmenter and fold, making every prediction any cell of that segmenter
reads (every member a sampler draws from, each sampler's one-pass prediction and the samples the moment maps
share, a raw-sample map's own pass, the in-sample predictions an in-sample detector learns from). Wave 2 runs the
cells: each an ordinary ``uqbench run`` into its own run folder, which finds its trained models and predictions in
the stage store and computes only its maps, detector and scores. Stages shared by several cells (the failure
labels, the scores) are computed by the first that needs them; a second one waits on the store's lock and reads
them. A rerun of the sweep resumes from the store, and a failed job is reported with its log while the others go
on.

Executors (``uqbench.executors``) implement :class:`Executor`: ``serial``, ``local`` and ``slurm``. Each job
runs :func:`execute`, which never raises: a failure is part of its outcome.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TextIO

from uqbench.errors import UqbenchError, UsageError
from uqbench.files import write_atomic
from uqbench.records import fields_from_json, fields_to_json, write_json

EXECUTORS = ("serial", "local", "slurm")


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One unit of a sweep: the predictions of one segmenter on some folds (wave 1), or one cell (wave 2).
    ``options`` are the :func:`uqbench.config.resolve` arguments every run of the sweep shares; the job
    resolves them where it runs (a Slurm node resolves ``--device auto`` to its own GPU)."""

    name: str
    wave: int
    segmenter: str
    uncertainties: tuple[str, ...]  # wave 1: every map of the grid; wave 2: the cell's
    detector: str | None
    options: dict[str, Any]
    samplers: tuple[str, ...] = ("mc-dropout",)  # wave 1: every sampler of the grid; wave 2: the cell's
    out: str | None = None  # wave 2: the cell's run folder
    needs: tuple[str, ...] = ()  # the jobs whose stages it reads

    def configs(self) -> list[Any]:
        """The resolved settings of the runs this job serves (one per sampler and map)."""
        from uqbench import config
        from uqbench.kinds import SAMPLER, UNCERTAINTY
        from uqbench.registry import registry

        opts = self.options | {k: None if self.options.get(k) is None else Path(self.options[k])
                               for k in ("data", "test_data")}
        n = opts.get("samples")

        def own_t(sampler: str, u: str) -> bool:
            """--samples sets T of the grid's MC maps; a one-pass map keeps its one pass, and a sampler whose T is
            not the user's to set (tta's 8, ensemble:M's M) keeps its own."""
            if n is None or registry().create(UNCERTAINTY, u).samples == 1:
                return True
            return config.fixed_count(registry().create(SAMPLER, sampler), sampler, n, one_pass=False)

        return [config.resolve(segmenter=self.segmenter, uncertainty=u, detector=self.detector, sampler=sampler,
                               out=None if self.out is None else Path(self.out),
                               **opts | ({"samples": None} if own_t(sampler, u) else {}))
                for sampler in self.samplers for u in self.uncertainties]


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How a job ended. ``error`` is one line (the log holds the rest); ``skipped``: a job it needs failed."""

    name: str
    ok: bool
    error: str | None = None
    skipped: bool = False
    log: str | None = None
    wall_s: float = 0.0
    computed: int = 0  # stages it computed
    from_store: int = 0  # stages it found in the store
    host: str = ""
    visible_devices: str | None = None  # CUDA_VISIBLE_DEVICES as the job saw it


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The jobs of a sweep in wave order, and the folder its cells and logs go to."""

    out: Path
    jobs: list[Job]
    cells: list[Job] = field(default_factory=list)

    def waves(self) -> list[list[Job]]:
        return [[j for j in self.jobs if j.wave == w] for w in sorted({j.wave for j in self.jobs})]


def shared_options(*, folds: Sequence[int], data: Path | None = None, profile: str | None = None,
                   samples: int | None = None, device: str = "auto", precision: str = "auto",
                   iterations: int | None = None, seed: int = 0, loss: str | None = None, dataset: str = "acdc",
                   protocol: str = "uqbench", failure_preset: str | None = None, correction: str | None = None,
                   detector_training: str | None = None, test_data: Path | None = None) -> dict[str, Any]:
    """The :func:`uqbench.config.resolve` arguments every run of a sweep shares, as its jobs carry them (JSON:
    data folders as absolute paths; each job resolves them again where it runs)."""
    return {"loss": loss, "data": None if data is None else str(data.resolve()), "dataset": dataset,
            "test_data": None if test_data is None else str(test_data.resolve()),
            "folds": list(folds), "profile": profile, "samples": samples, "device": device, "seed": seed,
            "iterations": iterations, "protocol": protocol, "failure_preset": failure_preset,
            "correction": correction, "precision": precision, "detector_training": detector_training}


def cell_name(segmenter: str, sampler: str, uncertainty: str, *, detector: str | None) -> str:
    """A cell's folder name, e.g. drn-mc-dropout-bmap-sresnet (':' and '/' of method arguments as '_')."""
    return f"{segmenter}-{sampler}-{uncertainty}-{detector or 'none'}".replace(":", "_").replace("/", "_")


def plan(*, segmenters: Sequence[str], uncertainties: Sequence[str], detectors: Sequence[str | None],
         options: dict[str, Any], out: Path, check_folders: bool = True,
         samplers: Sequence[str] = ("mc-dropout",)) -> Plan:
    """Check every cell's settings (UsageError names the bad option) and, with ``check_folders``, that no cell
    folder holds a run with other settings; then lay out the jobs: one train-and-predict job per segmenter and
    fold, then one job per cell."""
    for flag, values in (("--segmenter", segmenters), ("--sampler", samplers), ("--uncertainty", uncertainties),
                         ("--detector", detectors)):
        if not values:
            raise UsageError(f"{flag}: no method given")
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise UsageError(f"{flag}: {', '.join(twice)} given twice")
    folds = tuple(options["folds"])
    cells = [Job(name=cell_name(s, a, u, detector=d), wave=2, segmenter=s, samplers=(a,), uncertainties=(u,),
                 detector=d, options=options, out=str(out / cell_name(s, a, u, detector=d)),
                 needs=tuple(_predict_name(s, k) for k in folds))
             for s in segmenters for a in samplers for u in uncertainties for d in detectors]
    names = [c.name for c in cells]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise UsageError(f"--out {out}: two cells would share the folder {clash[0]} (their method names differ "
                         "only in ':' or '/'); run them in separate sweeps")
    for cell in cells:
        # a bad method name or argument, a bad option, or a cell folder holding a run with other settings fails
        # here, before any work (on Slurm, where --device auto resolves on the node, the cell itself checks)
        cfg = cell.configs()[0]
        if check_folders:
            from uqbench.run import check_out

            check_out(cfg)
    # Wave 1 makes what any cell reads; an in-sample detector's training predictions are made when one of the
    # grid's detectors needs them (the key does not depend on which detector). A test set's model is trained by
    # the first cell of its segmenter that reaches it; the store's lock makes the others wait and read it.
    detector = next((d for d in detectors if d is not None), None)
    predict = [Job(name=_predict_name(s, k), wave=1, segmenter=s, samplers=tuple(samplers),
                   uncertainties=tuple(uncertainties), detector=detector,
                   options=options | {"folds": [k], "test_data": None})
               for s in segmenters for k in folds]
    return Plan(out=out, jobs=predict + cells, cells=cells)


def _predict_name(segmenter: str, fold: int) -> str:
    return f"train+predict {segmenter} fold {fold}"


def execute(job: Job, progress: Any = None, errors: TextIO | None = None) -> Outcome:
    """Run one job where it was sent (this process, a child process, a Slurm node). Never raises (but on Ctrl-C):
    a failure is the outcome's one-line error, with the traceback written to ``errors`` (stderr: the job's log)."""
    from uqbench import run as runs

    errors = errors or sys.stderr
    t0 = time.perf_counter()
    base = Outcome(name=job.name, ok=True, host=socket.gethostname(),
                   visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    try:
        cfgs = job.configs()
        records = (runs.predict_only(cfgs, progress) if job.wave == 1
                   else runs.run(cfgs[0], progress).stages)
    except Exception as exc:  # a plugin's or the data's fault, a bug, a full disk: the log keeps its traceback
        traceback.print_exc(file=errors)
        errors.flush()
        error = str(exc) if isinstance(exc, UqbenchError) else f"{type(exc).__name__}: {exc}".splitlines()[0]
        return replace(base, ok=False, error=error, wall_s=time.perf_counter() - t0)
    stored = sum(r.from_store for r in records)
    return replace(base, wall_s=time.perf_counter() - t0, computed=len(records) - stored, from_store=stored)


class Handle(Protocol):
    """A submitted job."""

    def poll(self) -> Outcome | None:
        """Its outcome once it has ended, else None."""
        ...

    def cancel(self) -> None: ...


class Executor(Protocol):
    """Where the jobs run: ``slots`` of them at once, each polled every ``poll_s`` seconds."""

    slots: int
    poll_s: float

    def submit(self, job: Job, log: Path) -> Handle: ...


def run(p: Plan, executor: Executor, *, report: Callable[[Outcome], None] = lambda o: None) -> list[Outcome]:
    """Submit the plan's jobs wave by wave (a wave starts when the one before has ended), ``executor.slots`` at
    a time; a job whose needs failed is skipped. Writes OUT/sweep.json after each job; returns every outcome."""
    finished: dict[str, Outcome] = {}
    running: dict[str, Handle] = {}
    p.out.mkdir(parents=True, exist_ok=True)
    try:
        for wave in p.waves():
            pending = list(wave)
            while pending or running:
                while pending and len(running) < executor.slots:
                    job = pending.pop(0)
                    failed = [n for n in job.needs if n in finished and not finished[n].ok]
                    if failed:
                        _finish(p, finished, Outcome(name=job.name, ok=False, skipped=True,
                                                     error=f"skipped: {failed[0]} failed"), report=report)
                        continue
                    running[job.name] = executor.submit(job, p.out / "logs" / f"{_file_name(job.name)}.log")
                for name, handle in list(running.items()):
                    outcome = handle.poll()
                    if outcome is not None:
                        del running[name]
                        _finish(p, finished, outcome, report=report)
                if running:
                    time.sleep(executor.poll_s)
    except BaseException:
        for handle in running.values():
            handle.cancel()
        raise
    return [finished[j.name] for j in p.jobs]


def _finish(p: Plan, finished: dict[str, Outcome], outcome: Outcome, *, report: Callable[[Outcome], None]) -> None:
    finished[outcome.name] = outcome
    report(outcome)
    jobs = [fields_to_json(j) | {"outcome": fields_to_json(finished[j.name]) if j.name in finished else None}
            for j in p.jobs]
    write_json(p.out / "sweep.json", {"jobs": jobs})


def _file_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def main(argv: Sequence[str]) -> int:
    """``python -m uqbench.sweep JOB.json``: run one job of the ``local`` executor; its outcome goes to the file
    the spec names, written last."""
    spec = json.loads(Path(argv[0]).read_text())
    result = Path(spec.pop("outcome"))
    job: Job = fields_from_json(Job, spec, argv[0])
    outcome = execute(job)
    write_atomic(result, lambda tmp: tmp.write_text(json.dumps(fields_to_json(outcome))))
    return 0 if outcome.ok else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
