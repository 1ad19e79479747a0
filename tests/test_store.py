"""The stage store: keys, one computation per key, damaged or half-written outputs never read."""

from __future__ import annotations

import errno
import json
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from uqbench.store import StageKey, Store, stage_key, verify


def _key(**settings: object) -> StageKey:
    return stage_key("maps", settings=dict(settings) or {"a": 1}, plugins={"uncertainty": {"version": "1"}}, seed=3,
                     inputs={"predictions": "abc"})


def _write(text: str, name: str = "out.txt") -> Callable[[Path], None]:
    def compute(work: Path) -> None:
        (work / name).write_text(text)

    return compute


def test_a_stage_is_computed_once_then_served_from_the_store(tmp_path: Path) -> None:
    store, key, calls = Store(tmp_path), _key(), []

    def compute(work: Path) -> None:
        calls.append(work)
        (work / "sub").mkdir()
        (work / "sub" / "x.txt").write_text("x")

    first = store.obtain(key, compute)
    second = store.obtain(key, compute)
    assert len(calls) == 1 and first.computed and not second.computed and first.path == second.path
    assert (second.path / "sub" / "x.txt").read_text() == "x"
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert [o["file"] for o in manifest["outputs"]] == ["sub/x.txt"] and manifest["inputs"] == key.record
    assert second.wall_s == manifest["wall_s"] and verify(first.path) is None


def test_the_key_changes_with_every_setting_plugin_seed_and_input() -> None:
    base = stage_key("maps", settings={"a": 1}, plugins={"u": {"version": "1"}}, seed=0, inputs={"p": "k1"})
    same = stage_key("maps", settings={"a": 1}, plugins={"u": {"version": "1"}}, seed=0, inputs={"p": "k1"})
    others = [stage_key("failures", settings={"a": 1}, plugins={"u": {"version": "1"}}, seed=0, inputs={"p": "k1"}),
              stage_key("maps", settings={"a": 2}, plugins={"u": {"version": "1"}}, seed=0, inputs={"p": "k1"}),
              stage_key("maps", settings={"a": 1}, plugins={"u": {"version": "2"}}, seed=0, inputs={"p": "k1"}),
              stage_key("maps", settings={"a": 1}, plugins={"u": {"version": "1"}}, seed=1, inputs={"p": "k1"}),
              stage_key("maps", settings={"a": 1}, plugins={"u": {"version": "1"}}, seed=0, inputs={"p": "k2"})]
    assert same.digest == base.digest
    assert len({k.digest for k in others} | {base.digest}) == 6


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_a_damaged_entry_is_found_by_its_sha256_recomputed_and_noted(tmp_path: Path, damage: str) -> None:
    store, key = Store(tmp_path), _key()
    served = store.obtain(key, _write("0123456789"))
    out = served.path / "out.txt"
    if damage == "truncate":
        out.write_text("01234")
    elif damage == "flip":
        out.write_text("0123456780")  # same size, other bytes
    elif damage == "delete":
        out.unlink()
    else:
        (served.path / "manifest.json").write_text("{not json")
    again = store.obtain(key, _write("0123456789"))
    assert again.computed and (again.path / "out.txt").read_text() == "0123456789"
    expected = {"truncate": "out.txt does not match its sha256", "flip": "out.txt does not match its sha256",
                "delete": "out.txt is missing", "manifest": "unreadable manifest"}[damage]
    assert len(store.notes) == 1 and expected in store.notes[0] and "recomputed" in store.notes[0]
    assert again.why == store.notes[0]


def test_a_stage_that_fails_leaves_no_entry_and_only_a_resumable_one_keeps_its_work(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def fails(work: Path) -> None:
        (work / "checkpoint").write_text("step 7")
        raise RuntimeError("killed")

    for resumable in (False, True):
        key = _key(resumable=resumable)
        with pytest.raises(RuntimeError):
            store.obtain(key, fails, resumable=resumable)
        assert store.find(key) is None and not store.folder(key).exists()
        seen: list[str] = []

        def resume(work: Path, seen: list[str] = seen) -> None:
            seen.append((work / "checkpoint").read_text() if (work / "checkpoint").exists() else "fresh")
            (work / "model").write_text("done")

        served = store.obtain(key, resume, resumable=resumable)
        assert seen == (["step 7"] if resumable else ["fresh"])
        assert sorted(p.name for p in served.path.iterdir()) == (["checkpoint", "manifest.json", "model"]
                                                                if resumable else ["manifest.json", "model"])


def test_a_full_disk_removes_the_half_written_stage_and_names_its_path(tmp_path: Path) -> None:
    store, key = Store(tmp_path), _key()

    def full(work: Path) -> None:
        (work / "half").write_text("...")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left on device") as caught:
        store.obtain(key, full, resumable=True)
    assert caught.value.filename == str(store.folder(key).with_name(key.digest + ".part"))
    assert not Path(caught.value.filename).exists() and not store.folder(key).exists()


def test_force_recomputes_a_stored_stage(tmp_path: Path) -> None:
    store, key = Store(tmp_path), _key()
    store.obtain(key, _write("old"))
    served = store.obtain(key, _write("new"), force=True)
    assert served.computed and served.why == "forced" and (served.path / "out.txt").read_text() == "new"


def _obtain_slowly(root: str, log: str) -> str:
    def compute(work: Path) -> None:
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(1.0)
        (work / "out.txt").write_text("result")

    return str(Store(Path(root)).obtain(_key(), compute).path)


def test_two_processes_asking_for_one_key_compute_it_once(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        paths = pool.starmap(_obtain_slowly, [(str(tmp_path / "store"), str(log))] * 2)
    assert paths[0] == paths[1] and log.read_text() == "computed\n"
    assert Path(paths[0], "out.txt").read_text() == "result"


def _killed_mid_stage(root: str) -> None:
    def compute(work: Path) -> None:
        (work / "checkpoint").write_text("step 7")
        time.sleep(60)  # killed long before

    Store(Path(root)).obtain(_key(), compute, resumable=True)


def test_a_resumed_stage_counts_the_seconds_of_the_attempt_that_was_killed(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import uqbench.store

    monkeypatch.setattr(uqbench.store, "BEAT_S", 0.05)
    root = tmp_path / "store"
    ctx = multiprocessing.get_context("fork")
    killed = ctx.Process(target=_killed_mid_stage, args=(str(root),))
    killed.start()
    time.sleep(1.5)
    killed.kill()  # SIGKILL: no handler runs, only the ledger's last beat survives
    killed.join()
    store = Store(root)
    part = store.folder(_key()).with_name(_key().digest + ".part")
    assert json.loads((part / uqbench.store.LEDGER).read_text())["attempts"] == 1
    served = store.obtain(_key(), _write("done", "model"), resumable=True)
    meta = json.loads((served.path / "manifest.json").read_text())
    assert meta["attempts"] == 2 and 1.0 <= meta["wall_s"] < 10 and served.wall_s == meta["wall_s"]
    assert served.why.startswith("resumed: 2 attempts")
    assert sorted(p.name for p in served.path.iterdir()) == ["checkpoint", "manifest.json", "model"]
    fresh = store.obtain(_key(fresh=True), _write("done", "model"), resumable=True)
    assert json.loads((fresh.path / "manifest.json").read_text())["attempts"] == 1 and fresh.wall_s < 1.0
