"""The stage store: every stage output of every run, content-addressed, so a stage computed once is never
computed again for the same inputs (issue 12).

Layout: ``ROOT/stages/<stage>/<key>/`` holds a stage's files and, written last, ``manifest.json``: what was
hashed into the key, each output file with its size and sha256, the wall and device seconds, host and device.
``ROOT`` is ``$UQBENCH_CACHE`` (default ``~/.cache/uqbench``). A key is the sha256 of the stage's name, its own
settings, the distribution and version of every plugin it runs (and the plugin's optional ``cache_version``),
its seed, and the keys of its inputs, so anything that could change the output changes the key.

A stage is computed in ``<key>.part/`` under an exclusive lock on ``<key>.lock`` and renamed into place when its
manifest is written: a reader never sees half an output, two processes never compute the same key (the second
waits, then reads the first's result), and a stage killed mid-way leaves only the ``.part`` folder, which a
resumable stage (training, whose checkpoint lives there) continues from and any other stage clears. Outputs are
checked against their sha256 whenever they are read; a damaged entry is recomputed and the run says so.

A resumable stage's ``.part`` folder also holds a ledger (``LEDGER``) of the seconds its attempts have spent,
rewritten every ``BEAT_S`` seconds while one runs, so the manifest of a stage finished after a kill counts every
attempt whose work it kept (to within one beat per kill) and says how many there were: a resumed training's cost
line is not just its last stretch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uqbench.errors import DataError
from uqbench.files import write_atomic

STORE_VERSION = 1  # part of every key: a change to how stages are keyed or laid out invalidates the store
MANIFEST = "manifest.json"
LEDGER = ".spent.json"  # in a resumable stage's .part folder: {"wall_s", "device_s", "attempts"} so far
BEAT_S = 10.0  # how often a running resumable stage rewrites its ledger


@dataclass(frozen=True, slots=True)
class StageKey:
    """A stage's identity: its name and the sha256 of everything that decides its output."""

    stage: str
    digest: str
    record: dict[str, Any]  # what was hashed (kept in the manifest, shown by `uqbench cache ls`)

    @property
    def short(self) -> str:
        return self.digest[:12]


def stage_key(stage: str, *, settings: dict[str, Any], plugins: dict[str, Any] | None = None,
              seed: int | None = None, inputs: dict[str, Any] | None = None) -> StageKey:
    """The key of ``stage`` with these settings, plugin identities, seed and input keys (or input
    fingerprints); every value must be JSON-serialisable, and mappings are hashed with sorted keys."""
    record = {"store": STORE_VERSION, "stage": stage, "settings": settings, "plugins": plugins or {},
              "seed": seed, "inputs": inputs or {}}
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return StageKey(stage, hashlib.sha256(blob.encode()).hexdigest(), json.loads(blob))


def sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Served:
    """A stage output in the store: its folder, and whether this call computed it or found it."""

    key: StageKey
    path: Path
    computed: bool
    wall_s: float  # when it was computed (this call or an earlier one)
    device_s: float
    why: str = ""  # why a stored entry was recomputed ("" when it was found, or computed for the first time)


@dataclass(slots=True)
class Store:
    """The stage store at ``root``; ``notes`` collects what a run should be told (damaged entries recomputed)."""

    root: Path
    notes: list[str] = field(default_factory=list)

    def folder(self, key: StageKey) -> Path:
        return self.root / "stages" / key.stage / key.digest

    def find(self, key: StageKey) -> Served | None:
        """The verified entry for ``key``, or None when there is none or it is damaged (then it is removed and
        the reason is noted)."""
        folder = self.folder(key)
        if not folder.is_dir():
            return None
        problem = verify(folder)
        if problem is None:
            meta = json.loads((folder / MANIFEST).read_text())
            return Served(key=key, path=folder, computed=False, wall_s=meta["wall_s"], device_s=meta["device_s"])
        self.notes.append(f"{key.stage} {key.short}: {problem}; recomputed")
        shutil.rmtree(folder)
        return None

    def obtain(self, key: StageKey, compute: Callable[[Path], None], *, force: bool = False,
               resumable: bool = False, device: str = "cpu") -> Served:
        """The entry for ``key``, computing it with ``compute(work)`` unless a valid one exists (or ``force``).

        ``compute`` writes its outputs into the empty (or, when ``resumable``, possibly half-filled) folder
        ``work``. An OSError (a full or read-only disk) removes what was half written and names the path."""
        folder = self.folder(key)
        with self._locked(key):
            noted = len(self.notes)
            if force:
                shutil.rmtree(folder, ignore_errors=True)
            elif (found := self.find(key)) is not None:
                return found
            why = "forced" if force else (self.notes[-1] if len(self.notes) > noted else "")
            work = folder.with_name(folder.name + ".part")
            if work.exists() and (force or not resumable):
                shutil.rmtree(work)
            try:
                work.mkdir(parents=True, exist_ok=True)
                with _clock(work, device=device, ledger=resumable) as spent:
                    compute(work)
                (work / LEDGER).unlink(missing_ok=True)
                for p in list(work.rglob("*")):  # temporary files of writes a kill interrupted (files.write_atomic)
                    if p.is_file() and ".part" in p.suffixes:
                        p.unlink()
                wall, dev, attempts = spent()
                if attempts > 1 and not why:
                    why = f"resumed: {attempts} attempts, their seconds summed"
                _write_manifest(work, key, wall_s=wall, device_s=dev, device=device, attempts=attempts)
                work.rename(folder)
            except OSError as exc:
                shutil.rmtree(work, ignore_errors=True)
                if exc.filename:
                    raise
                raise OSError(exc.errno, exc.strerror or str(exc), str(work)) from exc
            return Served(key=key, path=folder, computed=True, wall_s=wall, device_s=dev, why=why)

    @contextmanager
    def _locked(self, key: StageKey) -> Iterator[None]:
        """An exclusive lock on the key (waits while another process holds it)."""
        lock = self.folder(key).with_name(key.digest + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def entries(self) -> list[Entry]:
        """Every complete entry, oldest first (a damaged manifest is listed with its problem)."""
        out = []
        for manifest in sorted((self.root / "stages").glob(f"*/*/{MANIFEST}")):
            folder = manifest.parent
            try:
                meta = json.loads(manifest.read_text())
                created, size = float(meta["created"]), sum(int(o["bytes"]) for o in meta["outputs"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                out.append(Entry(stage=folder.parent.name, digest=folder.name, path=folder, created=0.0,
                                 bytes=_du(folder), problem=f"unreadable manifest ({exc})"))
                continue
            out.append(Entry(stage=folder.parent.name, digest=folder.name, path=folder, created=created,
                             bytes=size + manifest.stat().st_size))
        return sorted(out, key=lambda e: e.created)

    def leftovers(self) -> list[Path]:
        """Half-computed ``.part`` folders (a killed or running stage) and folders without a manifest."""
        stages = self.root / "stages"
        if not stages.is_dir():
            return []
        return sorted(p for p in stages.glob("*/*") if p.is_dir() and not (p / MANIFEST).is_file())


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One stored stage output, as `uqbench cache ls` shows it."""

    stage: str
    digest: str
    path: Path
    created: float  # seconds since the epoch
    bytes: int
    problem: str = ""


def verify(folder: Path) -> str | None:
    """None when ``folder`` holds a readable manifest whose every output exists with its recorded size and
    sha256; otherwise what is wrong, in a few words."""
    try:
        meta = json.loads((folder / MANIFEST).read_text())
        outputs = meta["outputs"]
    except FileNotFoundError:
        return "no manifest (written last: the stage never finished)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({type(exc).__name__})"
    for o in outputs:
        path = folder / o["file"]
        if not path.is_file():
            return f"{o['file']} is missing"
        if path.stat().st_size != o["bytes"] or sha256(path) != o["sha256"]:
            return f"{o['file']} does not match its sha256"
    return None


@contextmanager
def _clock(work: Path, *, device: str, ledger: bool) -> Iterator[Callable[[], tuple[float, float, int]]]:
    """Yields a function giving (wall s, device s, attempts) spent on the stage so far. With ``ledger`` these
    start from what a killed attempt's ledger in ``work`` recorded, and a thread rewrites the ledger every
    ``BEAT_S`` seconds until the block ends (device seconds are wall seconds on CUDA, process CPU time otherwise)."""
    wall0, dev0, tried = 0.0, 0.0, 0
    if ledger:
        try:
            before = json.loads((work / LEDGER).read_text())
            wall0, dev0, tried = float(before["wall_s"]), float(before["device_s"]), int(before["attempts"])
        except (OSError, ValueError, KeyError, TypeError):  # no ledger (a first attempt) or a torn one
            pass
    t0, c0 = time.perf_counter(), time.process_time()

    def spent() -> tuple[float, float, int]:
        wall = time.perf_counter() - t0
        return wall0 + wall, dev0 + (wall if device.startswith("cuda") else time.process_time() - c0), tried + 1

    def write() -> None:
        wall, dev, attempts = spent()
        text = json.dumps({"wall_s": wall, "device_s": dev, "attempts": attempts})
        write_atomic(work / LEDGER, lambda tmp: tmp.write_text(text))

    if not ledger:
        yield spent
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(BEAT_S):
            write()

    write()
    thread = threading.Thread(target=beat, name="uqbench-stage-ledger", daemon=True)
    thread.start()
    try:
        yield spent
    finally:
        stop.set()
        thread.join()
        with suppress(OSError):  # an attempt that raised leaves its full time for the next (a full disk: none)
            write()


def _write_manifest(work: Path, key: StageKey, *, wall_s: float, device_s: float, device: str,
                    attempts: int) -> None:
    outputs = [{"file": str(p.relative_to(work)), "bytes": p.stat().st_size, "sha256": sha256(p)}
               for p in sorted(work.rglob("*")) if p.is_file() and p.name != MANIFEST]
    meta = {"key": key.digest, "stage": key.stage, "inputs": key.record, "outputs": outputs,
            "wall_s": wall_s, "device_s": device_s, "attempts": attempts, "device": device,
            "host": platform.node(), "pid": os.getpid(), "created": time.time()}
    write_atomic(work / MANIFEST, lambda tmp: tmp.write_text(json.dumps(meta, indent=1)))


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def open_store(root: Path) -> Store:
    """The store under ``root`` (the folder need not exist yet); DataError when ``root`` is a file."""
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: the uqbench cache ($UQBENCH_CACHE) is a file, not a folder")
    return Store(root)
