"""The run's stored stages as a graph: each stage keyed, served from the stage store or computed, and recorded.

    prepare -> train[k] (one per member) -> predict[k] -> maps[k] -> score[k] -> detect[k] -> correct -> summarise

per test fold k (and, when fold k's detector learns in-sample, predict, maps and score of fold k's own
training patients too). predict and maps write their outputs as NIfTI in original geometry, and score reads
those files through ``uqbench.scoring.case``, the function ``uqbench evaluate`` scores other tools' files with.
Each stage's output lives in the stage store (``uqbench.store``) under a key that hashes its settings, the
plugins it runs (distribution, version, ``cache_version``), its seed and its inputs' keys, so a stage is
computed once: ``--uncertainty emap`` after ``--uncertainty bmap`` trains and predicts nothing, and a
new detector, protocol or correction reuses every prediction. A sampler that draws from several trained models
(``ensemble:M``) has each trained as its own stage (``ensemble:5`` after ``ensemble:3`` trains two). An MC run also
makes the sampler's one-pass prediction of its test patients (MC dropout's deterministic pass: 1/T more
inference), which is all a one-pass map (emap) of the same model reads.

The work of each stage is in ``uqbench.run.stages``; the order of the stages in ``uqbench.run.orchestrate``.
``correct`` and ``summarise`` are recomputed by every run: they take seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.api import Context, MomentMap, Recipe, Segmenter, context_of, inputs_per_call, window_of
from uqbench.calls import Blamer
from uqbench.config import RunConfig
from uqbench.data import cache
from uqbench.devices import unit_stride_count
from uqbench.errors import DataError, PluginError, UsageError
from uqbench.kinds import DETECTOR, LOSS, SAMPLER, SEGMENTER, UNCERTAINTY, Kind
from uqbench.progress import Progress, tracker
from uqbench.protocol import calibration
from uqbench.records import fields_to_json
from uqbench.registry import registry
from uqbench.results.summary import StageRecord
from uqbench.run import stages
from uqbench.run.seeds import member_seed, predict_seed, stream_seed
from uqbench.scoring.case import Volume
from uqbench.store import Served, StageKey, Store, stage_key

STAGES = ("train", "predict", "maps", "score", "detect")
"""The stored stages in graph order; ``--force STAGE`` recomputes that stage and every one after it here."""

TORCH_STAGES = ("train", "predict", "detect")
"""The stages that run networks. On CPU their results depend on torch's thread count (training diverges: a
model trained on 1 thread scores cases up to 0.14 Dice apart from the same recipe on 2), so it is part of their
keys there: a stage made with another thread count is recomputed, never mixed in."""

CODE = {"train": 1, "predict": 1, "maps": 2, "score": 3, "detect": 1}
"""Each stored stage's code version, part of its key: bumped when the harness's own computation of it changes.
maps 2 and score 2: the run scores the files it writes (failure voxels, calibration and the map detectors read
come from the original-geometry outputs; score took over the failures stage). predict kept 1: it stopped
storing calibration counts, which nothing reads now, and computes the same labels, statistics and files.
score 3: calibration.json keeps each case's counts, summed exactly once over all cases (``scoring.case.sum_counts``)."""


LATER_RECIPE_FIELDS = {"max_turn": 180.0}
"""Recipe fields added after models were stored, with the value every earlier recipe trained with: keyed only when
a recipe sets another, so the stored models of earlier recipes still serve them."""


def recipe_key(recipe: Recipe) -> dict[str, Any]:
    """The recipe as the train stage's key holds it (LATER_RECIPE_FIELDS)."""
    return {k: v for k, v in fields_to_json(recipe).items()
            if k not in LATER_RECIPE_FIELDS or v != LATER_RECIPE_FIELDS[k]}


def check_force(force: str | None) -> None:
    """UsageError unless ``force`` names a stored stage (or is None)."""
    if force is not None and force not in STAGES:
        raise UsageError(f"--force {force!r}: expected one of {', '.join(STAGES)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Predicted:
    """The stored stages of one fold's case set: where its predictions, maps and scores are."""

    fold: int
    cases: list[cache.Prepared]
    predictions: Served
    maps: Served
    scored: Served

    def load_volumes(self) -> list[Volume]:
        with np.load(self.scored.path / "grid.npz") as grid:
            return [stages.volume(c, self.fold, grid=grid, scored=self.scored.path) for c in self.cases]


class StageGraph:
    """Keys, serves and records the stored stages of one run."""

    def __init__(self, cfg: RunConfig, *, store: Store, force: str | None, progress: Progress | None,
                 seg: Segmenter, umap: Any, loss: Any, sampler: Any) -> None:
        self.cfg, self.store, self.force, self.progress = cfg, store, force, progress
        self.seg, self.umap, self.loss, self.sampler = seg, umap, loss, sampler
        self.keys: list[tuple[StageRecord, StageKey]] = []  # every stage served, in order, with its key
        self.loaded: dict[str, list[Volume]] = {}
        self.forced: set[str] = set()
        self.models: dict[str, Any] = {}
        self.offline = False  # True: serve only what the store holds, compute nothing (reading a finished run)
        self.blamer = Blamer(cfg.methods())

    @cached_property
    def unit_stride(self) -> int:
        """How many of the net's convolutions the harness computes at unit stride (uqbench.devices)."""
        with self.blamer.blame(SEGMENTER, "building its network"):
            return unit_stride_count(self.seg, self.cfg.recipe, self.cfg.device)

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

    def volumes(self, p: Predicted) -> list[Volume]:
        """The volumes of a case set, read from the store once per run (the detectors of several folds and the
        summary all read the test folds)."""
        key = p.scored.key.digest
        if key not in self.loaded:
            self.loaded[key] = p.load_volumes()
        return self.loaded[key]

    def train(self, k: int, own: list[cache.Prepared], *, member: int = 0) -> Served:
        """Fold k's trained model: the segmenter's own (member 0), or member m of the sampler's ensemble, trained
        alike on its own seed stream (``uqbench.run.seeds.member_seed``) and stored apart."""
        cfg = self.cfg
        seed = member_seed(cfg.seed, k, member)
        guarded = self.unit_stride  # keyed only when some: the other nets' stored models still serve
        key = self.key("train", settings={"recipe": recipe_key(cfg.recipe),
                                          "preprocess": fields_to_json(cfg.preprocess), "device": cfg.device,
                                          "precision": cfg.precision} | ({"member": member} if member else {})
                       | ({"unit_stride": guarded} if guarded else {}),
                       plugins=(SEGMENTER, LOSS), seed=seed, inputs={"cases": [c.fingerprint for c in own]})

        def compute(work: Path) -> None:
            from uqbench.train.loop import train

            where = f"training, fold {k}" + (f", member {member}" if member else "")
            self.models[key.digest] = self.blamer.call(
                SEGMENTER, train, where=where, segmenter=self.seg, recipe=cfg.recipe,
                loss=self.blamer.attributed(LOSS, self.loss, where=where),
                slices=[(c.image[z], c.labels[z]) for c in own for z in range(c.image.shape[0])], device=cfg.device,
                seed=seed, checkpoint=work / "checkpoint.pt",
                advance=tracker(self.progress, f"fold {k} train" + (f" m{member}" if member else ""),
                                cfg.recipe.iterations), precision=cfg.precision)

        return self.serve(key, fold=k, cases="training", compute=compute, resumable=True,
                          detail=f"member {member}" if member else "")

    def members(self, k: int, own: list[cache.Prepared]) -> list[Served]:
        """Every trained model fold k's sampler draws from, trained first when the store lacks them."""
        return [self.train(k, own, member=m) for m in range(self.sampler.members)]

    def _model(self, trained: Served) -> Any:
        if trained.key.digest not in self.models:
            from uqbench.train.loop import load_trained

            self.models[trained.key.digest] = load_trained(segmenter=self.seg, recipe=self.cfg.recipe,
                                                           checkpoint=trained.path / "checkpoint.pt",
                                                           device=self.cfg.device)
        return self.models[trained.key.digest]

    def predict(self, k: int, *, role: str, cases: list[cache.Prepared], trained: Sequence[Served], one_pass: bool
                ) -> Served:
        """The sampler's samples of ``cases`` from fold k's trained model(s): for an MC map (``one_pass`` False) the
        run's T, otherwise the sampler's one-pass prediction (mc-dropout: one deterministic pass). Scored cases
        (role "test", or "held-out" for --test-data) also get their probabilities as NIfTI."""
        cfg, umap, sampler = self.cfg, self.umap, self.sampler
        raw = not one_pass and not isinstance(umap, MomentMap)  # a map that reads the raw samples is made here
        samples = sampler.count(1, one_pass=True) if one_pass else cfg.samples
        seed = predict_seed(cfg.seed, k, training=role == "training")
        with self.blamer.blame(SEGMENTER, "its declarations"):  # keyed only when set: older keys hold
            window = window_of(self.seg, cfg.recipe)
            chunk = inputs_per_call(self.seg, cfg.device)
        key = self.key("predict", settings={"one_pass": one_pass, "samples": samples, "device": cfg.device,
                                            "precision": cfg.precision, "export": role != "training",
                                            "preprocess": fields_to_json(cfg.preprocess)}
                       | ({"window": window} if window else {}) | ({"chunk": chunk} if chunk else {}),
                       plugins=(SEGMENTER, SAMPLER, UNCERTAINTY) if raw else (SEGMENTER, SAMPLER), seed=seed,
                       inputs={"models": [t.key.digest for t in trained], "cases": [c.fingerprint for c in cases]})

        def sample(c: cache.Prepared, case_seed: int) -> dict[str, np.ndarray]:
            from uqbench.infer.sampling import Drawer, predict_volume, sample_volume

            drawer = Drawer(sampler=sampler, models=[self._model(t) for t in trained], multiple=self.seg.size_multiple,
                            context=context_of(self.seg), device=cfg.device, precision=cfg.precision, window=window,
                            chunk=chunk)
            with self.blamer.blame(SAMPLER, f"inference, fold {k}, {c.patient} {c.phase}"):
                if raw:
                    mean, unc = predict_volume(drawer, c.image, umap=umap, samples=samples, seed=case_seed)
                    stats = {"mean": mean, "map": unc}
                else:
                    stats = sample_volume(drawer, c.image, one_pass=one_pass, samples=samples, seed=case_seed)
            try:
                calibration.check_probabilities(stats["mean"].transpose(1, 0, 2, 3), f"{c.patient} {c.phase}")
            except ValueError as exc:
                raise PluginError(f"sampler '{cfg.sampler}' with segmenter '{cfg.segmenter}' gave bad softmax "
                                  f"output: {exc}") from None
            return stats

        def compute(work: Path) -> None:
            stages.predict(work, cases=cases, sample=sample, seed=seed, export=role != "training",
                           params=cfg.preprocess, advance=tracker(self.progress, f"fold {k} {role} infer",
                                                                   len(cases)))

        return self.serve(key, fold=k, cases=role, compute=compute, resumable=True,
                          detail=f"{cfg.sampler} T={samples}" + (" one-pass" if one_pass else ""))

    def maps(self, k: int, *, role: str, cases: list[cache.Prepared], predicted: Served) -> Served:
        cfg, umap = self.cfg, self.umap
        key = self.key("maps", settings={"preprocess": fields_to_json(cfg.preprocess)},
                       plugins=(UNCERTAINTY,), inputs={"predictions": predicted.key.digest,
                                                       "cases": [c.fingerprint for c in cases]})
        samples = int(predicted.key.record["settings"]["samples"])

        def from_stats(stats: dict[str, np.ndarray], c: cache.Prepared) -> np.ndarray:
            from uqbench.infer.maps import as_moments, map_of

            moments = as_moments({n: v.astype(np.float32) for n, v in stats.items() if n in stages.STATISTICS},
                                 samples)
            with self.blamer.blame(UNCERTAINTY, f"computing the map, fold {k}, {c.patient} {c.phase}"):
                unc = map_of(umap, moments=moments)
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
            advance=tracker(self.progress, f"fold {k} {role} score", len(cases))))

    def detect(self, k: int, *, fit: Sequence[Predicted], test: Predicted, images: dict[str, np.ndarray]) -> Served:
        cfg = self.cfg
        assert cfg.detector is not None

        def keys(p: Predicted) -> list[str]:
            return [p.predictions.key.digest, p.maps.key.digest, p.scored.key.digest]

        key = self.key("detect", settings={"profile": cfg.profile.value, "device": cfg.device},
                       plugins=(DETECTOR,), seed=stream_seed(cfg.seed, k),
                       inputs={"fit": [keys(p) for p in fit], "test": keys(test)})

        def compute(work: Path) -> None:
            det = registry().create(DETECTOR, cfg.detector or "")
            ctx = Context(profile=cfg.profile, device=cfg.device, seed=stream_seed(cfg.seed, k),
                          workdir=work / "workdir")

            def blame(fn: Callable[..., Any], *args: Any, where: str) -> Any:
                return self.blamer.call(DETECTOR, fn, *args, where=f"{where} (fold {k})")

            with_images = [(v, images[f"{v.patient}_{v.phase}"]) for p in fit for v in self.volumes(p)]
            stages.detect(work, detector=det, name=cfg.detector or "", blame=blame, fit=with_images,
                          advance=tracker(self.progress, f"fold {k} detect" if k >= 0 else "test set detect",
                                          1 + len(self.volumes(test))),
                          test=[(v, images[f"{v.patient}_{v.phase}"]) for v in self.volumes(test)], context=ctx)

        return self.serve(key, fold=k, cases="test", compute=compute, resumable=True)




def stage_graph(cfg: RunConfig, *, store: Store, force: str | None, progress: Progress | None) -> StageGraph:
    """The stage graph of ``cfg``'s run, its methods created from the registry."""
    reg = registry()
    return StageGraph(cfg, store=store, force=force, progress=progress, seg=reg.create(SEGMENTER, cfg.segmenter),
                      umap=reg.create(UNCERTAINTY, cfg.uncertainty), loss=reg.create(LOSS, cfg.loss),
                      sampler=reg.create(SAMPLER, cfg.sampler))
