"""The run as a graph of stages, in one place:

    prepare -> train[k] -> predict[k] -> maps[k] -> score[k] -> detect[k] -> correct -> summarise

per test fold k (and, when fold k's detector learns in-sample, predict, maps and score of fold k's own
training patients too). predict and maps write their outputs as NIfTI in original geometry, and score reads
those files through ``uqbench.scoring``, the function ``uqbench evaluate`` scores other tools' files with.
Each stage's output lives in the stage store (``uqbench.store``) under a key that hashes its settings, the
plugins it runs (distribution, version, ``cache_version``), its seed and its inputs' keys, so a stage is
computed once: ``--uncertainty emap`` after ``--uncertainty bmap`` trains and predicts nothing, and a
new detector, protocol or correction reuses every prediction. An MC run also makes the one deterministic pass of
its test patients (1/T more inference), which is all a one-pass map (emap) of the same model reads.

The run folder holds the run's results (config.json, cases.csv, detection.csv, summary.json), ``stages.json``
(each stage's key, whether it came from the store, its time) and the NIfTI outputs, linked from the store.
``correct`` and ``summarise`` are recomputed by every run: they take seconds.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import uqbench
from uqbench import evaluation, scoring, stages
from uqbench.api import Context, MomentMap, Segmenter, context_of
from uqbench.config import RunConfig
from uqbench.data import cache, phantom
from uqbench.data.preprocess import PreprocessParams
from uqbench.devices import machine
from uqbench.errors import DataError, MethodFault, PluginError, UsageError
from uqbench.evaluation import HELD_OUT, Volume, seed_stream
from uqbench.files import write_atomic
from uqbench.kinds import DATASET, DETECTOR, LOSS, SEGMENTER, UNCERTAINTY, Kind, kind
from uqbench.protocol import calibration
from uqbench.protocol.detection import DetectorTraining
from uqbench.records import fields_to_json, from_json, write_json
from uqbench.registry import registry
from uqbench.results import summary as summaries
from uqbench.results.summary import DatasetInfo, HeldOut, Provenance, StageRecord, Summary
from uqbench.store import Served, StageKey, Store, open_store, stage_key

PHANTOM_PATIENTS = 20
PHANTOM_SEED = 0

STAGES = ("train", "predict", "maps", "score", "detect")
"""The stored stages in graph order; ``--force STAGE`` recomputes that stage and every one after it here."""

TORCH_STAGES = ("train", "predict", "detect")
"""The stages that run networks. On CPU their results depend on torch's thread count (training diverges: a
model trained on 1 thread scores cases up to 0.14 Dice apart from the same recipe on 2), so it is part of their
keys there: a stage made with another thread count is recomputed, never mixed in."""

CODE = {"train": 1, "predict": 1, "maps": 2, "score": 2, "detect": 1}
"""Each stored stage's code version, part of its key: bumped when the harness's own computation of it changes.
maps 2 and score 2: the run scores the files it writes (failure voxels, calibration and the map detectors read
come from the original-geometry outputs; score took over the failures stage). predict kept 1: it stopped
storing calibration counts, which nothing reads now, and computes the same labels, statistics and files."""


class Progress(Protocol):
    """The part of rich's Progress the pipeline uses (the CLI passes one in; tests may pass None)."""

    def add_task(self, description: str, *, total: float | None = ...) -> Any: ...

    def advance(self, task_id: Any, advance: float = ...) -> None: ...


def _tracker(progress: Progress | None, description: str, total: int) -> Callable[[int], None]:
    """An ``advance(n)`` callback whose bar appears on first use, so a stage served from the store shows none."""
    if progress is None:
        return lambda n: None
    task = None

    def advance(n: int) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task(description, total=total)
        progress.advance(task, n)

    return advance


def phantom_root(patients: int = PHANTOM_PATIENTS, seed: int = PHANTOM_SEED,
                 advance: Callable[[int], None] | None = None) -> Path:
    """The built-in phantom dataset, generated once into the cache folder."""
    root = cache.cache_root() / "phantom" / f"v{phantom.VERSION}-n{patients}-s{seed}"
    if not (root / ".complete").is_file():
        work = root.with_name(root.name + ".part")
        shutil.rmtree(work, ignore_errors=True)
        phantom.write_phantom(work, patients, seed, advance=advance)
        (work / ".complete").write_text("")
        shutil.rmtree(root, ignore_errors=True)
        work.rename(root)
    return root


@contextmanager
def _out_lock(out: Path) -> Iterator[None]:
    """Hold a lock on the OUT folder itself for the run (no lock file is left behind): a second run into the same
    folder is refused while the first works."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"--out {out}: another uqbench run is writing there now; wait for it to finish or "
                             "choose another --out") from None
        yield
    finally:
        os.close(fd)


def check_out(cfg: RunConfig) -> None:
    """Refuse an OUT folder that holds a run with other settings (UsageError naming them), or a config.json
    that is not one; writes nothing."""
    path = cfg.out / "config.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as exc:
            raise DataError(f"{path}: not a uqbench run configuration ({exc}); delete that folder or choose "
                            "another --out") from None
        new = json.loads(json.dumps(cfg.identity()))  # as it would read back from config.json
        diff = [k for k in new if old.get(k) != new[k]]
        if diff:
            raise UsageError(f"--out {cfg.out}: holds a run with other settings ({', '.join(diff)}); "
                             "choose another --out or delete that folder")


def _check_out(cfg: RunConfig) -> Path:
    check_out(cfg)
    write_json(cfg.out / "config.json", cfg.record() | {"uqbench": uqbench.__version__,
                                                         "python": platform.python_version(),
                                                         "machine": machine(cfg.device)})
    return cfg.out


@dataclass(frozen=True, slots=True, kw_only=True)
class _Predicted:
    """The stored stages of one fold's case set: where its predictions, maps and scores are."""

    fold: int
    cases: list[cache.Prepared]
    predictions: Served
    maps: Served
    scored: Served

    def load_volumes(self) -> list[Volume]:
        with np.load(self.scored.path / "grid.npz") as grid:
            return [stages.volume(c, self.fold, grid) for c in self.cases]


class _Graph:
    """Keys, serves and records the stored stages of one run."""

    def __init__(self, cfg: RunConfig, *, store: Store, force: str | None, progress: Progress | None,
                 seg: Segmenter, umap: Any, loss: Any) -> None:
        self.cfg, self.store, self.force, self.progress = cfg, store, force, progress
        self.seg, self.umap, self.loss = seg, umap, loss
        self.keys: list[tuple[StageRecord, StageKey]] = []  # every stage served, in order, with its key
        self.loaded: dict[str, list[Volume]] = {}
        self.forced: set[str] = set()
        self.models: dict[str, Any] = {}
        self.offline = False  # True: serve only what the store holds, compute nothing (reading a finished run)

    def _plugin(self, of: Kind[Any]) -> dict[str, Any]:
        spec = str(self.cfg.method(of))
        entry = registry().entry(of, spec.split(":")[0])
        return {"spec": spec, "distribution": entry.distribution, "version": entry.version,
                "cache_version": getattr(entry.factory, "cache_version", None)}

    def key(self, stage: str, *, settings: dict[str, Any], plugins: Sequence[Kind[Any]] = (),
            seed: int | None = None, inputs: dict[str, Any]) -> StageKey:
        if stage in TORCH_STAGES and self.cfg.device == "cpu":
            import torch

            settings = settings | {"cpu_threads": torch.get_num_threads()}
        return stage_key(stage, settings={"code": CODE[stage]} | settings,
                         plugins={p.name: self._plugin(p) for p in plugins}, seed=seed, inputs=inputs)

    def serve(self, key: StageKey, *, fold: int, cases: str, compute: Callable[[Path], None],
              resumable: bool = False, detail: str = "") -> Served:
        """The stage's output from the store, computed first when needed (and when ``--force`` reaches it)."""
        force = (self.force is not None and STAGES.index(key.stage) >= STAGES.index(self.force)
                 and key.digest not in self.forced)
        if force:
            self.forced.add(key.digest)
        if self.offline:
            found = self.store.find(key)
            if found is None:
                raise DataError(f"{self.cfg.out}: the stage store ({self.store.root}) no longer holds {key.stage} "
                                f"of fold {fold} ({cases}); run the same `uqbench run` again to restore it")
            served = found
        else:
            served = self.store.obtain(key, compute, force=force, resumable=resumable, device=self.cfg.device)
        record = StageRecord(stage=key.stage, fold=fold, cases=cases, detail=detail, key=key.digest,
                             from_store=not served.computed,
                             wall_s=served.wall_s, device_s=served.device_s, why=served.why)
        self.keys.append((record, key))
        return served

    def volumes(self, p: _Predicted) -> list[Volume]:
        """The volumes of a case set, read from the store once per run (the detectors of several folds and the
        summary all read the test folds)."""
        key = p.scored.key.digest
        if key not in self.loaded:
            self.loaded[key] = p.load_volumes()
        return self.loaded[key]

    def train(self, k: int, own: list[cache.Prepared]) -> Served:
        cfg = self.cfg
        key = self.key("train", settings={"recipe": fields_to_json(cfg.recipe),
                                          "preprocess": fields_to_json(cfg.preprocess), "device": cfg.device,
                                          "precision": cfg.precision},
                       plugins=(SEGMENTER, LOSS), seed=cfg.seed + seed_stream(k),
                       inputs={"cases": [c.fingerprint for c in own]})

        def compute(work: Path) -> None:
            from uqbench.train.loop import train

            where = f"training, fold {k}"
            self.models[key.digest] = _plugin_call(
                cfg, SEGMENTER, train, where=where, segmenter=self.seg, recipe=cfg.recipe,
                loss=_Attributed(cfg, LOSS, self.loss, where=where),
                slices=[(c.image[z], c.labels[z]) for c in own for z in range(c.image.shape[0])], device=cfg.device,
                seed=cfg.seed + seed_stream(k), checkpoint=work / "checkpoint.pt",
                advance=_tracker(self.progress, f"fold {k} train", cfg.recipe.iterations), precision=cfg.precision)

        return self.serve(key, fold=k, cases="training", compute=compute, resumable=True)

    def _model(self, trained: Served) -> Any:
        if trained.key.digest not in self.models:
            from uqbench.train.loop import load_trained

            self.models[trained.key.digest] = load_trained(segmenter=self.seg, recipe=self.cfg.recipe,
                                                           checkpoint=trained.path / "checkpoint.pt",
                                                           device=self.cfg.device)
        return self.models[trained.key.digest]

    def predict(self, k: int, *, role: str, cases: list[cache.Prepared], trained: Served, stochastic: bool) -> Served:
        """T MC-dropout passes (``stochastic``) or one deterministic pass over ``cases`` with fold k's model.
        Scored cases (role "test", or "held-out" for --test-data) also get their probabilities as NIfTI."""
        cfg, umap = self.cfg, self.umap
        raw = stochastic and not isinstance(umap, MomentMap)  # a map that reads the raw samples is made here
        samples = cfg.samples if stochastic else 1
        seed = cfg.seed * 100_003 + seed_stream(k) * 1000 + (0 if role != "training" else 500)
        key = self.key("predict", settings={"passes": "mc" if stochastic else "deterministic", "samples": samples,
                                            "device": cfg.device, "precision": cfg.precision,
                                            "export": role != "training",
                                            "preprocess": fields_to_json(cfg.preprocess)},
                       plugins=(SEGMENTER, UNCERTAINTY) if raw else (SEGMENTER,), seed=seed,
                       inputs={"model": trained.key.digest, "cases": [c.fingerprint for c in cases]})

        def sample(c: cache.Prepared, case_seed: int) -> dict[str, np.ndarray]:
            from uqbench.infer.mc import predict_volume, sample_volume

            model, multiple, context = self._model(trained), self.seg.size_multiple, context_of(self.seg)
            with _blame(cfg, SEGMENTER, f"inference, fold {k}, {c.patient} {c.phase}"):
                if raw:
                    mean, unc = predict_volume(model, c.image, umap=umap, samples=samples, multiple=multiple,
                                               device=cfg.device, seed=case_seed, precision=cfg.precision,
                                               context=context)
                    stats = {"mean": mean, "map": unc}
                else:
                    stats = sample_volume(model, c.image, stochastic=stochastic, samples=samples, multiple=multiple,
                                          device=cfg.device, seed=case_seed, precision=cfg.precision,
                                          context=context)
            try:
                calibration.check_probabilities(stats["mean"].transpose(1, 0, 2, 3), f"{c.patient} {c.phase}")
            except ValueError as exc:
                raise PluginError(f"segmenter '{cfg.segmenter}' gave bad softmax output: {exc}") from None
            return stats

        def compute(work: Path) -> None:
            stages.predict(work, cases=cases, sample=sample, seed=seed, export=role != "training",
                           params=cfg.preprocess, advance=_tracker(self.progress, f"fold {k} {role} infer",
                                                                   len(cases)))

        return self.serve(key, fold=k, cases=role, compute=compute, resumable=True,
                          detail=f"mc T={samples}" if stochastic else "deterministic")

    def maps(self, k: int, *, role: str, cases: list[cache.Prepared], predicted: Served) -> Served:
        cfg, umap = self.cfg, self.umap
        key = self.key("maps", settings={"preprocess": fields_to_json(cfg.preprocess)},
                       plugins=(UNCERTAINTY,), inputs={"predictions": predicted.key.digest,
                                                       "cases": [c.fingerprint for c in cases]})
        samples = int(predicted.key.record["settings"]["samples"])

        def from_stats(stats: dict[str, np.ndarray], c: cache.Prepared) -> np.ndarray:
            from uqbench.infer.mc import as_moments, check_map

            moments = as_moments({n: v.astype(np.float32) for n, v in stats.items() if n in stages.STATISTICS},
                                 samples)
            with _blame(cfg, UNCERTAINTY, f"computing the map, fold {k}, {c.patient} {c.phase}"):
                try:
                    unc = umap.from_moments(moments)
                except Exception as exc:  # the map's own failure
                    raise MethodFault("uncertainty", f"{type(exc).__name__}: {exc}") from exc
                check_map(unc, moments.mean)
            values: np.ndarray = unc.float().numpy()
            return values

        def compute(work: Path) -> None:
            stages.maps(work, cases=cases, predictions=predicted.path, umap_name=cfg.uncertainty, compute=from_stats,
                        params=cfg.preprocess)

        return self.serve(key, fold=k, cases=role, compute=compute)

    def score(self, k: int, *, role: str, cases: list[cache.Prepared], predicted: Served, mapped: Served) -> Served:
        """The case set's outputs scored from their files (test cases with their probabilities' calibration)."""
        cfg = self.cfg
        rule = cfg.protocol.failure_rule
        key = self.key("score", settings={"rule": fields_to_json(rule), "preprocess": fields_to_json(cfg.preprocess),
                                          "probabilities": role != "training"},
                       inputs={"predictions": predicted.key.digest, "maps": mapped.key.digest,
                               "cases": [c.fingerprint for c in cases]})
        return self.serve(key, fold=k, cases=role, compute=lambda work: stages.score(
            work, cases=cases, predictions=predicted.path, maps=mapped.path, umap_name=cfg.uncertainty, fold=k,
            rule=rule, params=cfg.preprocess, probabilities=role != "training",
            advance=_tracker(self.progress, f"fold {k} {role} score", len(cases))))

    def detect(self, k: int, *, fit: Sequence[_Predicted], test: _Predicted, images: dict[str, np.ndarray]) -> Served:
        cfg = self.cfg
        assert cfg.detector is not None

        def keys(p: _Predicted) -> list[str]:
            return [p.predictions.key.digest, p.maps.key.digest, p.scored.key.digest]

        key = self.key("detect", settings={"profile": cfg.profile.value, "device": cfg.device},
                       plugins=(DETECTOR,), seed=cfg.seed + seed_stream(k),
                       inputs={"fit": [keys(p) for p in fit], "test": keys(test)})

        def compute(work: Path) -> None:
            det = registry().create(DETECTOR, cfg.detector or "")
            ctx = Context(profile=cfg.profile, device=cfg.device, seed=cfg.seed + seed_stream(k),
                          workdir=work / "workdir")

            def blame(fn: Callable[..., Any], *args: Any, where: str) -> Any:
                return _plugin_call(cfg, DETECTOR, fn, *args, where=f"{where} (fold {k})")

            with_images = [(v, images[f"{v.patient}_{v.phase}"]) for p in fit for v in self.volumes(p)]
            stages.detect(work, detector=det, name=cfg.detector or "", blame=blame, fit=with_images,
                          test=[(v, images[f"{v.patient}_{v.phase}"]) for v in self.volumes(test)], context=ctx)

        return self.serve(key, fold=k, cases="test", compute=compute, resumable=True)


def run(cfg: RunConfig, progress: Progress | None = None, *, force: str | None = None) -> Summary:
    """Execute a resolved run and return its summary (also written to OUT/summary.json). ``force`` names a stage
    of STAGES to recompute, with every stage after it, even when the store holds it."""
    t_start = time.perf_counter()
    _git_commit()  # the code this process runs, not whatever HEAD is when the summary is written
    _check_force(force)
    data, store = _load(cfg, _source(cfg, progress), progress)  # refusals of the data come before OUT is touched
    held_out = _held_out(cfg, data, progress) if cfg.test_data else None
    with _out_lock(cfg.out):
        out = _check_out(cfg)
        g = _graph(cfg, store=store, force=force, progress=progress)
        summary = _run_graph(cfg, g, data=data, held_out=held_out, t_start=t_start)
        _write_stages(out, g)
    return summary


def predict_only(cfgs: Sequence[RunConfig], progress: Progress | None = None, *, force: str | None = None
                 ) -> list[StageRecord]:
    """Train and predict fold by fold every stage that ``cfgs`` (runs on the same data) would read, into the
    store, and nothing after: a sweep's first wave. No run folder is written; the stages come back."""
    _git_commit()  # as run(): the sweep's cells claim the commit it started with
    _check_force(force)
    records: list[StageRecord] = []
    data, store = _load(cfgs[0], _source(cfgs[0], progress), progress)
    for cfg in cfgs:
        if (cfg.data, cfg.dataset, cfg.preprocess) != (cfgs[0].data, cfgs[0].dataset, cfgs[0].preprocess):
            raise UsageError("predict_only: the runs read different data")
        g = _graph(cfg, store=store, force=force, progress=progress)
        for k in cfg.folds:
            _predictions(cfg, g, k=k, data=data)
        seen = {r.key for r in records}
        records += [r for r, _ in g.keys if r.key not in seen]  # each stage once
    return records


@dataclass(frozen=True, slots=True, kw_only=True)
class _Data:
    """The prepared cases of a run's dataset, with their folds."""

    cases: list[cache.Prepared]
    fold_of: dict[str, int]
    root: Path
    fingerprint: str

    def split(self, k: int) -> tuple[list[cache.Prepared], list[cache.Prepared]]:
        """Fold k's test cases and its training cases."""
        return ([c for c in self.cases if self.fold_of[c.patient] == k],
                [c for c in self.cases if self.fold_of[c.patient] != k])


@dataclass(frozen=True, slots=True, kw_only=True)
class _HeldOutData:
    """The prepared cases of --test-data."""

    cases: list[cache.Prepared]
    root: Path
    fingerprint: str


def _held_out(cfg: RunConfig, data: _Data, progress: Progress | None) -> _HeldOutData:
    """--test-data checked and prepared before OUT is touched: read by the run's reader, no patient of it a
    training patient (by id; the test set must be disjoint)."""
    root = Path(cfg.test_data or "")
    ds = registry().create(DATASET, cfg.dataset, root)
    cases, fingerprint = prepared(ds, root=root, params=cfg.preprocess, what="--test-data: ",
                                  call=lambda fn, where: _plugin_call(cfg, DATASET, fn, where=where))
    shared = sorted({c.patient for c in cases} & {c.patient for c in data.cases})
    if shared:
        raise DataError(f"--test-data {root}: {shared[0]} is also a training patient in {data.root} ({len(shared)} "
                        "such); the test set must be disjoint from the training set")
    return _HeldOutData(cases=cases, root=root, fingerprint=fingerprint)


def prepared(ds: Any, *, root: Path, params: PreprocessParams, what: str = "",
             call: Callable[[Callable[[], Any], str], Any] = lambda fn, where: fn()
             ) -> tuple[list[cache.Prepared], str]:
    """A dataset's cases on both grids (prepared into the cache on first use) and its fingerprint; DataError with
    its first problem (prefixed by ``what``) unless the data are clean. ``call(fn, where)`` runs the reader's
    methods (the run passes one that blames the dataset plugin)."""
    problems = call(ds.problems, "checking the data")
    if problems:
        more = f" (and {len(problems) - 1} more; run `uqbench data check {root}`)" if len(problems) > 1 else ""
        raise DataError(f"{what}{problems[0]}{more}")
    fingerprint = call(ds.fingerprint, "reading the data")
    folder, entries = cache.prepare(ds, params=params, fingerprint=fingerprint, notes=[], advance=lambda n: None)
    return cache.load(folder, entries, params=params, advance=lambda n: None), fingerprint


def _test_set(cfg: RunConfig, g: _Graph, *, data: _Data, held_out: _HeldOutData, tested: dict[int, _Predicted]
              ) -> HeldOut:
    """--test-data after the cross-validation: the segmenter trained on every training patient predicts the
    held-out cases, the detector is fitted on every cross-validation prediction (out of fold by construction),
    and the held-out cases are scored and corrected; OUT/test/ gets their tables and NIfTI."""
    trained = g.train(HELD_OUT, data.cases)
    predicted = g.predict(HELD_OUT, role="held-out", cases=held_out.cases, trained=trained, stochastic=False)
    if g.umap.samples > 1:
        predicted = g.predict(HELD_OUT, role="held-out", cases=held_out.cases, trained=trained, stochastic=True)
    p = _scored(g, HELD_OUT, role="held-out", cases=held_out.cases, predicted=predicted)
    rows = json.loads((p.scored.path / "rows.json").read_text())
    volumes = g.volumes(p)
    if cfg.detector is not None:
        images = {f"{c.patient}_{c.phase}": c.image for c in [*data.cases, *held_out.cases]}
        detected = g.detect(HELD_OUT, fit=[tested[k] for k in cfg.folds], test=p, images=images)
        with np.load(detected.path / "probs.npz") as z:
            volumes = [replace(v, patch_probs=z[f"{v.patient}_{v.phase}"]) for v in volumes]
    measured = evaluation.measure(rows=rows, volumes=volumes, reliability=stages.read_calibration(p.scored.path),
                                  protocol=cfg.protocol, params=cfg.preprocess)
    out = cfg.out / "test"
    _link_nifti(out / "nifti", cfg.uncertainty, p)
    evaluation.write_tables(out, rows=measured.rows, detection_rows=measured.detection_rows, protocol=cfg.protocol)
    return HeldOut(dataset=DatasetInfo(name=cfg.dataset, root=str(held_out.root), fingerprint=held_out.fingerprint,
                                       phantom=False), **measured.summary_fields())


@dataclass(frozen=True, slots=True, kw_only=True)
class _Source:
    """A run's dataset, checked: its reader, folder, folds and fingerprint."""

    dataset: Any
    root: Path
    fold_of: dict[str, int]
    fingerprint: str


def _source(cfg: RunConfig, progress: Progress | None) -> _Source:
    """Check the data and the folds before anything is written, so a refused run leaves nothing behind."""
    # The torch stages are imported here, once, not on first use: a run that lasts hours then keeps the code
    # it started with even if the installation changes under it.
    import torch

    from uqbench.infer import mc  # noqa: F401
    from uqbench.train import loop  # noqa: F401

    torch.set_flush_denormal(True)  # denormal floats slow CPU training several-fold
    root = Path(cfg.data) if cfg.data else phantom_root(advance=_tracker(progress, "phantom", PHANTOM_PATIENTS))
    ds = registry().create(DATASET, cfg.dataset, root)
    problems = _plugin_call(cfg, DATASET, ds.problems, where="checking the data")
    if problems:
        more = f" (and {len(problems) - 1} more; run `uqbench data check {root}`)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    fold_of = dict(ds.folds())
    for k in cfg.folds:
        if k not in fold_of.values():
            raise UsageError(f"--folds: fold {k} has no patients in {root}")
        if set(fold_of.values()) == {k}:
            raise UsageError(f"--folds: fold {k} leaves no training patients in {root}")
    fingerprint = _plugin_call(cfg, DATASET, ds.fingerprint, where="reading the data")
    return _Source(dataset=ds, root=root, fold_of=fold_of, fingerprint=fingerprint)


def _load(cfg: RunConfig, source: _Source, progress: Progress | None) -> tuple[_Data, Store]:
    """The prepared cases (prepared on first use) and the stage store."""
    store = open_store(cache.cache_root())
    folder, entries = cache.prepare(source.dataset, params=cfg.preprocess, fingerprint=source.fingerprint,
                                    notes=store.notes, advance=_tracker(progress, "prepare", 2 * len(source.fold_of)))
    cases = cache.load(folder, entries, params=cfg.preprocess, advance=_tracker(progress, "load", len(entries)))
    unsplit = sorted({c.patient for c in cases} - set(source.fold_of))
    if unsplit:
        raise DataError(f"{source.root}: {unsplit[0]} has no fold in the committed split (a held-out test patient?); "
                        f"cross-validation needs every patient of --data in the split ({len(unsplit)} are not)")
    return _Data(cases=cases, fold_of=source.fold_of, root=source.root, fingerprint=source.fingerprint), store


def _check_force(force: str | None) -> None:
    if force is not None and force not in STAGES:
        raise UsageError(f"--force {force!r}: expected one of {', '.join(STAGES)}")


def _graph(cfg: RunConfig, *, store: Store, force: str | None, progress: Progress | None) -> _Graph:
    reg = registry()
    return _Graph(cfg, store=store, force=force, progress=progress, seg=reg.create(SEGMENTER, cfg.segmenter),
                  umap=reg.create(UNCERTAINTY, cfg.uncertainty), loss=reg.create(LOSS, cfg.loss))


def _in_sample(cfg: RunConfig) -> bool:
    """Whether the run's detector learns from each fold's own training patients (their predictions are made)."""
    return cfg.detector is not None and cfg.protocol.detector_training == "in-sample"


def _predictions(cfg: RunConfig, g: _Graph, *, k: int, data: _Data) -> tuple[Served, Served | None]:
    """Fold k's model, trained, and its predictions: of the test patients (MC when the map samples; the
    deterministic pass is always made, for a one-pass map of the same model), and of its own training patients
    when the detector learns in-sample. Returns the test predictions the map reads and the in-sample ones."""
    test, own = data.split(k)
    trained = g.train(k, own)
    deterministic = g.predict(k, role="test", cases=test, trained=trained, stochastic=False)
    mc = g.umap.samples > 1
    predicted = g.predict(k, role="test", cases=test, trained=trained, stochastic=True) if mc else deterministic
    own_predicted = (g.predict(k, role="training", cases=own, trained=trained, stochastic=mc)
                     if _in_sample(cfg) else None)
    return predicted, own_predicted


def _fold(cfg: RunConfig, g: _Graph, *, k: int, data: _Data) -> tuple[_Predicted, _Predicted | None]:
    """Fold k's test predictions with their maps and scores, and the same of its own training patients when
    the detector learns in-sample."""
    test, own = data.split(k)
    predicted, own_predicted = _predictions(cfg, g, k=k, data=data)
    tested = _scored(g, k, role="test", cases=test, predicted=predicted)
    return tested, None if own_predicted is None else _scored(g, k, role="training", cases=own, predicted=own_predicted)


def _scored(g: _Graph, k: int, *, role: str, cases: list[cache.Prepared], predicted: Served) -> _Predicted:
    mapped = g.maps(k, role=role, cases=cases, predicted=predicted)
    return _Predicted(fold=k, cases=cases, predictions=predicted, maps=mapped,
                      scored=g.score(k, role=role, cases=cases, predicted=predicted, mapped=mapped))


def _detects(cfg: RunConfig) -> bool:
    """Whether the run's detector runs: out of fold it needs 2 or more folds."""
    return cfg.detector is not None and (_in_sample(cfg) or len(cfg.folds) > 1)


def _with_patch_probs(cfg: RunConfig, g: _Graph, volumes: list[Volume], *, data: _Data,
                      tested: dict[int, _Predicted], training: dict[int, _Predicted]) -> list[Volume]:
    """``volumes`` with each fold's detector's patch probabilities (the detector fitted as the protocol says)."""
    images = {f"{c.patient}_{c.phase}": c.image for c in data.cases}
    probs: dict[str, np.ndarray] = {}
    for k in cfg.folds:
        detected = g.detect(k, fit=_fit_set(cfg.protocol.detector_training, k, tested=tested, training=training),
                            test=tested[k], images=images)
        with np.load(detected.path / "probs.npz") as z:
            probs |= {name: z[name] for name in z.files}
    return [replace(v, patch_probs=probs[f"{v.patient}_{v.phase}"]) for v in volumes]


def stored_volumes(cfg: RunConfig) -> tuple[list[Volume], dict[str, np.ndarray]]:
    """A finished run's volumes as its summary scored them (patch probabilities included when its detector ran)
    and their images on the network grid ("patientNNN_ED" -> [Z, Y, X]), read from the stage store without
    computing anything; DataError naming the stage the store no longer holds."""
    source = _source(cfg, None)
    data, store = _load(cfg, source, None)
    g = _graph(cfg, store=store, force=None, progress=None)
    g.offline = True
    tested: dict[int, _Predicted] = {}
    training: dict[int, _Predicted] = {}
    for k in cfg.folds:
        tested[k], own_predicted = _fold(cfg, g, k=k, data=data)
        if own_predicted is not None:
            training[k] = own_predicted
    volumes = [v for k in cfg.folds for v in g.volumes(tested[k])]
    if _detects(cfg):
        volumes = _with_patch_probs(cfg, g, volumes, data=data, tested=tested, training=training)
    return volumes, {f"{c.patient}_{c.phase}": c.image for c in data.cases}


def _run_graph(cfg: RunConfig, g: _Graph, *, data: _Data, held_out: _HeldOutData | None, t_start: float
               ) -> Summary:
    out, protocol = cfg.out, cfg.protocol
    tested: dict[int, _Predicted] = {}
    training: dict[int, _Predicted] = {}  # in-sample: fold k's predictions of its own training patients
    rows: list[dict[str, Any]] = []
    counts: scoring.CalibrationCounts | None = None
    for k in cfg.folds:
        tested[k], own_predicted = _fold(cfg, g, k=k, data=data)
        if own_predicted is not None:
            training[k] = own_predicted
        scored = tested[k].scored
        rows += json.loads((scored.path / "rows.json").read_text())
        counts = scoring.add_counts(counts, stages.read_calibration(scored.path))
        _link_nifti(out / "nifti", cfg.uncertainty, tested[k])
    assert counts is not None
    volumes = [v for k in cfg.folds for v in g.volumes(tested[k])]
    notes: list[str] = []
    if _detects(cfg):
        volumes = _with_patch_probs(cfg, g, volumes, data=data, tested=tested, training=training)
    elif cfg.detector:
        notes.append(f"detector '{cfg.detector}' not run: it is fitted out of fold, which needs 2 or more --folds "
                     "(or --detector-training in-sample)")
    measured = evaluation.measure(rows=rows, volumes=volumes, reliability=counts, protocol=protocol,
                                  params=cfg.preprocess)
    test = None if held_out is None else _test_set(cfg, g, data=data, held_out=held_out, tested=tested)
    notes = g.store.notes + _why_recomputed(out, g) + notes
    summary = Summary(
        **measured.summary_fields(), profile=cfg.profile.value, device=cfg.device,
        timings_s=measured.timings_s | {"run_s": time.perf_counter() - t_start}, notes=notes,
        protocol=protocol, stages=[r for r, _ in g.keys],
        dataset=DatasetInfo(name=cfg.dataset, root=str(data.root), fingerprint=data.fingerprint,
                            phantom=cfg.data is None),
        provenance=_provenance(cfg, data.fold_of), test=test)
    evaluation.write_tables(out, rows=measured.rows, detection_rows=measured.detection_rows, protocol=protocol)
    summaries.write(out / "summary.json", summary)
    return summary


NIFTI_FOLDERS = ("predictions", "probabilities", "uncertainty-maps")
"""OUT/nifti/'s folders, named like the ``uqbench evaluate`` options that read them back."""


def _link_nifti(folder: Path, umap_name: str, p: _Predicted) -> None:
    """A fold's NIfTI outputs as ``folder/{predictions,probabilities,uncertainty-maps}/<patient>_<phase>.nii.gz``,
    the layout ``uqbench evaluate`` reads, hard-linked from the store (copied where it is on another disk)."""
    for c in p.cases:
        for sub, src in zip(NIFTI_FOLDERS, (stages.labels_file(p.scored.path, c),
                                            stages.probabilities_file(p.predictions.path, c),
                                            stages.map_file(p.maps.path, c, umap_name)), strict=True):
            dst = folder / sub / f"{stages.case_key(c)}.nii.gz"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_file() and os.path.samefile(src, dst):
                continue
            write_atomic(dst, functools.partial(_link_or_copy, src))


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_stages(out: Path, g: _Graph) -> None:
    """OUT/stages.json: every stage the run used, with its key, what was hashed into it, and its time."""
    write_json(out / "stages.json", {"stages": [fields_to_json(r) | {"hashed": key.record} for r, key in g.keys]})


def _why_recomputed(out: Path, g: _Graph) -> list[str]:
    """For a run folder run before: which stages got another key this time, and what changed (a plugin's
    version, a setting), from the keys' records."""
    path = out / "stages.json"
    try:
        before = {(s["stage"], s["fold"], s["cases"], s["detail"]): s
                  for s in json.loads(path.read_text())["stages"]}
    except (OSError, ValueError, KeyError, TypeError):
        return []
    notes = []
    for record, key in g.keys:
        old = before.get((record.stage, record.fold, record.cases, record.detail))
        if old is None or old.get("key") == key.digest:
            continue
        changed = [f"{path} {a!r} -> {b!r}" for path, a, b in _differences(old.get("hashed", {}), key.record)
                   if not path.startswith("inputs")]
        what = "; ".join(changed) if changed else "an input it reads was recomputed"
        stage = f"{record.stage} ({record.detail})" if record.detail else record.stage
        notes.append(f"{stage} of fold {record.fold}, {record.cases} patients, recomputed: {what}")
    return notes


def _differences(a: Any, b: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, old, new) of every leaf where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for name in sorted(set(a) | set(b)):
            yield from _differences(a.get(name), b.get(name), f"{path}.{name}" if path else name)
    elif a != b:
        yield path, a, b


def _provenance(cfg: RunConfig, fold_of: dict[str, int]) -> Provenance:
    """Where each method of the run came from (distribution, version), which distributions could load, and
    what else the numbers depend on: uqbench's version and commit, torch, the device, the fold split."""
    return provenance(methods=cfg.methods(), device=cfg.device, precision=cfg.precision, seed=cfg.seed,
                      fold_of=fold_of)


def provenance(*, methods: dict[str, str], device: str, precision: str, seed: int, fold_of: dict[str, int]
               ) -> Provenance:
    """The provenance of results made with ``methods`` (kind -> spec) on ``device``: shared by runs and
    ``uqbench evaluate``."""
    import hashlib

    import torch

    split = hashlib.sha256(json.dumps(sorted(fold_of.items())).encode()).hexdigest()
    where = machine(device)
    record = registry().provenance(methods) | {
        "uqbench": uqbench.__version__, "git_commit": _git_commit(), "torch": torch.__version__,
        "device_name": where["cuda"] or where["cpu"], "precision": precision, "cpu_threads": torch.get_num_threads(),
        "fold_split": split, "seed": seed}
    made: Provenance = from_json(Provenance, record, "provenance")
    return made


@functools.cache
def _git_commit() -> str | None:
    """The commit of the uqbench source tree when it is a git checkout (an editable install), else None; read
    once, when the process starts its first run, so that a commit made while a sweep runs is not claimed by
    the cells that sweep writes afterwards."""
    head = Path(uqbench.__file__).resolve().parents[2] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (head.parent / ref[5:]).read_text().strip()
        return ref
    except OSError:
        return None


class _Attributed:
    """A plugin object handed to harness code: errors raised in its calls name it, not the caller's plugin
    (a failing loss inside training is the loss's fault, not the segmenter's)."""

    def __init__(self, cfg: RunConfig, of: Kind[Any], obj: Callable[..., Any], *, where: str) -> None:
        self.cfg, self.kind, self.obj, self.where = cfg, of, obj, where

    def __call__(self, *args: Any) -> Any:
        return _plugin_call(self.cfg, self.kind, self.obj, *args, where=self.where)


@contextmanager
def _blame(cfg: RunConfig, of: Kind[Any], where: str) -> Iterator[None]:
    """Code run inside is a method of kind ``of`` at work in stage ``where``: its unexpected exception, or a
    MethodFault the harness raised on a method's output, becomes a PluginError naming that method, its
    distribution and version, the stage and the case."""
    try:
        yield
    except MethodFault as exc:
        raise _fault(cfg, kind(exc.kind), where=where, detail=exc.detail) from exc
    except (UsageError, DataError, PluginError, KeyboardInterrupt, OSError):
        raise
    except Exception as exc:
        raise _fault(cfg, of, where=where, detail=f"{type(exc).__name__}: {exc}") from exc


def _fault(cfg: RunConfig, of: Kind[Any], *, where: str, detail: str) -> PluginError:
    return registry().fault(of, str(cfg.method(of)), f"failed in {where}: {detail}")


def _plugin_call(cfg: RunConfig, of: Kind[Any], fn: Callable[..., Any], *args: Any, where: str, **kwargs: Any
                 ) -> Any:
    """Call into a plugin of kind ``of`` during stage ``where``, blamed as in :func:`_blame`."""
    with _blame(cfg, of, where):
        return fn(*args, **kwargs)


def _fit_set(mode: DetectorTraining, fold: int, *, tested: dict[int, _Predicted], training: dict[int, _Predicted]
             ) -> list[_Predicted]:
    """The predictions fold ``fold``'s detector learns from (see uqbench.protocol.detection.DetectorTraining):
    its own training patients' in-sample, the other run folds' test patients' out of fold."""
    if mode == "in-sample":
        return [training[fold]]
    return [p for k, p in tested.items() if k != fold]
