"""Where a sweep's jobs run (``uqbench.sweep.Executor``): ``serial`` (in this process, one job at a time),
``local`` (parallel processes on this machine, one GPU each where several are present, via
``CUDA_VISIBLE_DEVICES``) and ``slurm`` (through submitit, an optional extra)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from uqbench.errors import UsageError
from uqbench.records import fields_from_json, fields_to_json, write_json
from uqbench.sweep import Handle, Job, Outcome, execute


@dataclass(slots=True)
class _Done:
    outcome: Outcome

    def poll(self) -> Outcome | None:
        return self.outcome

    def cancel(self) -> None:
        pass


class Serial:
    """Each job in this process, one after another, showing its progress; a failure's traceback goes to the
    job's log."""

    slots, poll_s = 1, 0.0

    def __init__(self, progress: Any = None) -> None:
        self.progress = progress

    def submit(self, job: Job, log: Path) -> Handle:
        errors = io.StringIO()
        outcome = execute(job, self.progress, errors)
        if not outcome.ok:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(errors.getvalue())
        return _Done(replace(outcome, log=str(log)))


class Local:
    """Each job a child process (``python -m uqbench.sweep JOB.json``) on this machine, ``slots`` at once. With
    GPUs, each job sees ``gpus_per_job`` of them through ``CUDA_VISIBLE_DEVICES``, none shared; on CPU each gets
    an equal share of the cores (``OMP_NUM_THREADS``)."""

    poll_s = 0.2

    def __init__(self, *, gpus: Sequence[str], gpus_per_job: int = 1, max_parallel: int | None = None) -> None:
        if gpus_per_job < 0:
            raise UsageError(f"--gpus-per-job {gpus_per_job}: must be 0 (CPU jobs) or more")
        if gpus_per_job == 0:  # every job on the CPU: none sees a GPU
            gpus = []
        if gpus and gpus_per_job > len(gpus):
            raise UsageError(f"--gpus-per-job {gpus_per_job}: this machine has {len(gpus)} GPU(s)")
        if max_parallel is not None and max_parallel < 1:
            raise UsageError(f"--max-parallel {max_parallel}: must be at least 1")
        if gpus:  # as many jobs as there are GPUs for them, or fewer
            self.slots = min(len(gpus) // gpus_per_job, max_parallel or len(gpus))
        else:  # CPU: a job per 4 cores unless told
            self.slots = max_parallel or max(1, (os.cpu_count() or 1) // 4)
        self.free = list(gpus)
        self.gpus_per_job = gpus_per_job
        self.threads = max(1, (os.cpu_count() or 1) // self.slots)

    def submit(self, job: Job, log: Path) -> Handle:
        log.parent.mkdir(parents=True, exist_ok=True)
        spec = log.with_suffix(".job.json")
        result = log.with_suffix(".outcome.json")
        result.unlink(missing_ok=True)
        write_json(spec, fields_to_json(job) | {"outcome": str(result)})
        env = dict(os.environ)
        taken: list[str] = []
        if self.free:
            taken, self.free = self.free[:self.gpus_per_job], self.free[self.gpus_per_job:]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(taken)
        elif self.gpus_per_job == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        with log.open("w") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "uqbench.sweep", str(spec)], stdout=sink,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        return _Child(owner=self, name=job.name, proc=proc, log=log, result=result, gpus=taken)


@dataclass(slots=True, kw_only=True)
class _Child:
    """A job of the local executor: its process, log, outcome file and the GPUs it holds."""

    owner: Local
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    result: Path
    gpus: list[str]

    def poll(self) -> Outcome | None:
        code = self.proc.poll()
        if code is None:
            return None
        self.owner.free += self.gpus
        self.gpus = []
        try:
            outcome: Outcome = fields_from_json(Outcome, json.loads(self.result.read_text()), str(self.result))
            return replace(outcome, log=str(self.log))
        except (OSError, ValueError):  # it died before writing its outcome (killed, out of memory)
            return Outcome(name=self.name, ok=False, log=str(self.log),
                           error=f"the job's process ended with status {code} before finishing"
                                 f"{_last_line(self.log)}")

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


class Submitit:
    """Jobs through a submitit executor: Slurm in use, its ``debug`` and ``local`` executors in the tests."""

    poll_s = 1.0

    def __init__(self, executor: Any, *, max_parallel: int | None = None) -> None:
        self.executor = executor
        self.slots = max_parallel or 1_000_000  # the cluster's scheduler queues the rest

    def submit(self, job: Job, log: Path) -> Handle:
        return _Remote(job.name, self.executor.submit(execute, job))


@dataclass(slots=True)
class _Remote:
    name: str
    job: Any  # a submitit Job

    def poll(self) -> Outcome | None:
        if not self.job.done():
            return None
        paths = self.job.paths
        try:
            outcome: Outcome = self.job.result()
        except Exception as exc:  # the job died without an outcome (killed, timed out, node failure)
            state = getattr(self.job, "state", "?")
            return Outcome(name=self.name, ok=False, log=str(paths.stderr),
                           error=f"Slurm job {self.job.job_id} ended {state} without finishing "
                                 f"({type(exc).__name__}){_last_line(paths.stderr)}")
        return replace(outcome, log=str(paths.stderr if not outcome.ok else paths.stdout))

    def cancel(self) -> None:
        self.job.cancel(check=False)


def slurm(folder: Path, *, partition: str | None, gpus_per_job: int, timeout_min: int,
          max_parallel: int | None) -> Submitit:
    """The submitit Slurm executor with the sweep's options; UsageError naming the extra when submitit is absent."""
    try:
        import submitit
    except ImportError:
        raise UsageError("--executor slurm needs submitit: pip install 'uqbench[slurm]'") from None
    if timeout_min < 1:
        raise UsageError(f"--timeout-min {timeout_min}: must be at least 1")
    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as exc:  # no srun on PATH
        raise UsageError(f"--executor slurm: {exc}") from None
    if gpus_per_job < 0:
        raise UsageError(f"--gpus-per-job {gpus_per_job}: must be 0 (CPU jobs) or more")
    params: dict[str, Any] = {"job_name": "uqbench", "time": timeout_min, "ntasks_per_node": 1}
    if gpus_per_job:
        params["gpus_per_node"] = gpus_per_job
    if partition:
        params["partition"] = partition
    executor.update_parameters(**params)
    return Submitit(executor, max_parallel=max_parallel)


def _last_line(log: Path | str) -> str:
    try:
        lines = [ln.strip() for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f": {lines[-1]}" if lines else ""


