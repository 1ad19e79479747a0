"""The prepared cache: exact coding, reuse, and invalidation when the source changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uqbench.data import cache, layout
from uqbench.data import preprocess as pp
from uqbench.errors import DataError
from uqbench.registry import registry


def test_difference_coding_round_trips_exactly() -> None:
    q = np.random.default_rng(0).integers(0, 64, (3, 17, 23)).astype(np.uint8)
    assert np.array_equal(cache._decode(cache._encode(q), q.shape), q)


def test_prepare_reuses_folder_and_load_matches_direct_preprocessing(tiny_phantom: Path, tmp_path: Path) -> None:
    ds = registry().create("dataset", "acdc", tiny_phantom)
    params = pp.PreprocessParams()
    folder, entries = cache.prepare(ds, params=params, fingerprint=ds.fingerprint(), root=tmp_path)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert cache.prepare(ds, params=params, fingerprint=ds.fingerprint(), root=tmp_path)[0] == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    prepared = cache.load(folder, entries, params=params)
    case = next(layout.iter_cases(tiny_phantom))
    direct = pp.resample_image(pp.normalise(case.image), case.spacing)
    assert np.abs(prepared[0].image - direct).max() <= 0.5 / 63 + 1e-6  # quantisation only
    assert np.array_equal(prepared[0].original_labels, case.labels)
    assert np.array_equal(prepared[0].labels, pp.resample_labels(case.labels, case.spacing))


def test_changed_source_file_gets_a_new_cache_key(phantom_copy: Path, tmp_path: Path) -> None:
    ds = registry().create("dataset", "acdc", phantom_copy)
    params = pp.PreprocessParams()
    first, _ = cache.prepare(ds, params=params, fingerprint=ds.fingerprint(), root=tmp_path)
    cfg = phantom_copy / "patient001" / "Info.cfg"
    cfg.write_text(cfg.read_text().replace("NbFrame: 30", "NbFrame: 31"))
    assert cache.prepare(ds, params=params, fingerprint=ds.fingerprint(), root=tmp_path)[0] != first


def test_two_runs_preparing_at_once_share_one_complete_folder(tiny_phantom: Path, tmp_path: Path) -> None:
    ds = registry().create("dataset", "acdc", tiny_phantom)
    params = pp.PreprocessParams()
    inner: list[tuple[Path, list[dict]]] = []

    class Racing:
        """The same dataset; halfway through, a second run prepares the same key to the end."""

        def cases(self):  # type: ignore[no-untyped-def]
            for i, case in enumerate(ds.cases()):
                if i == 3:
                    inner.append(cache.prepare(ds, params=params, fingerprint=ds.fingerprint(), root=tmp_path))
                yield case

    folder, entries = cache.prepare(Racing(), params=params, fingerprint=ds.fingerprint(), root=tmp_path)  # type: ignore[arg-type]
    assert inner and folder == inner[0][0] and entries == inner[0][1]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no half-written copy left
    assert len(cache.load(folder, entries, params=params)) == len(entries) == 8


def test_a_cases_fingerprint_is_that_of_format_3_so_no_stage_key_changes(tiny_phantom: Path, tmp_path: Path) -> None:
    """Format 4 adds the grid labels' file; a case's fingerprint (what stage keys hash) must not see it."""
    import hashlib
    import json

    ds = registry().create("dataset", "acdc", tiny_phantom)
    params = pp.PreprocessParams()
    folder, entries = cache.prepare(ds, params=params, fingerprint=ds.fingerprint(), root=tmp_path)
    case = cache.load(folder, entries, params=params)[0]
    format_3 = {k: v for k, v in entries[0].items() if k not in ("file", "grid_file", "grid_shape", "grid_sha256")}
    identity = format_3 | {"params": params.fingerprint()}
    assert case.fingerprint == hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def test_a_command_loads_only_the_patients_it_asks_for(tiny_phantom: Path, tmp_path: Path) -> None:
    ds = registry().create("dataset", "acdc", tiny_phantom)
    params = pp.PreprocessParams()
    folder, entries = cache.prepare(ds, params=params, fingerprint=ds.fingerprint(), root=tmp_path)
    loaded = cache.load(folder, entries, params=params, patients=lambda p: p == "patient006")
    assert [(c.patient, c.phase) for c in loaded] == [("patient006", "ED"), ("patient006", "ES")]


def test_a_damaged_grid_file_is_prepared_again(tiny_phantom: Path, tmp_path: Path) -> None:
    ds = registry().create("dataset", "acdc", tiny_phantom)
    params = pp.PreprocessParams()
    folder, entries = cache.prepare(ds, params=params, fingerprint=ds.fingerprint(), root=tmp_path)
    grid = folder / entries[0]["grid_file"]
    grid.write_bytes(grid.read_bytes()[:-3])
    notes: list[str] = []
    cache.prepare(ds, params=params, fingerprint=ds.fingerprint(), root=tmp_path, notes=notes)
    assert notes and f"{grid.name} does not match its sha256" in notes[0]
    case = cache.load(folder, json_cases(folder), params=params)[0]
    assert np.array_equal(case.labels, pp.resample_labels(case.original_labels, case.spacing))


def json_cases(folder: Path) -> list[dict]:
    import json

    return json.loads((folder / "manifest.json").read_text())["cases"]


def test_data_prepared_clean_are_not_read_through_again_by_the_check(phantom_copy: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The check reads every volume; data of a content already prepared (so found clean) skip it, and data of
    another content (one file changed) are checked again."""
    from uqbench.data.prepare import checked

    monkeypatch.setenv("UQBENCH_CACHE", str(tmp_path))
    ds = registry().create("dataset", "acdc", phantom_copy)
    params = pp.PreprocessParams()
    calls: list[str] = []
    real = ds.problems
    monkeypatch.setattr(ds, "problems", lambda: calls.append("checked") or real())
    fingerprint = checked(ds, root=phantom_copy, params=params)
    cache.prepare(ds, params=params, fingerprint=fingerprint)
    assert checked(ds, root=phantom_copy, params=params) == fingerprint and calls == ["checked"]
    gt = next(phantom_copy.glob("patient001/*_gt.nii.gz"))
    gt.write_bytes(gt.read_bytes()[:-50])  # truncated: another content, and a broken one
    with pytest.raises(DataError, match="patient001"):
        checked(ds, root=phantom_copy, params=params)
    assert calls == ["checked", "checked"]
