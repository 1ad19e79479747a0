"""The prepared cache: exact coding, reuse, and invalidation when the source changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uqbench.data import cache, layout
from uqbench.data import preprocess as pp
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
