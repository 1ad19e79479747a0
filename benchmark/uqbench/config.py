"""A run's settings: resolved once from the command line against the registry and the machine, held as typed
values, and recorded in ``OUT/config.json``. They decide a run's results, so a resumed run must match them."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from uqbench.api import Profile, Recipe, any_orientation, turns_of
from uqbench.data.preprocess import PreprocessParams
from uqbench.devices import Precision, resolve_device, resolve_precision, resolve_profile
from uqbench.errors import DataError, PluginError, UsageError
from uqbench.kinds import DATASET, DETECTOR, KINDS, LOSS, SAMPLER, SEGMENTER, UNCERTAINTY, Kind
from uqbench.protocol import failures as failure_rules
from uqbench.protocol import presets
from uqbench.protocol.detection import MODES, TRAINING_DATA
from uqbench.records import fields_from_json, fields_to_json
from uqbench.registry import registry

PROVENANCE_KEYS = ("uqbench", "python", "machine")
"""What config.json records beside the settings (not part of them): the versions that wrote it and the machine
(CPU model, CUDA device), since ``--precision auto`` and so the numbers depend on it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """Every setting of a run, resolved; the field names are the keys of config.json."""

    segmenter: str  # the spec, "name[:arg...]"
    uncertainty: str
    detector: str | None  # None: no detection and correction
    loss: str
    data: str | None  # an absolute dataset folder; None = the built-in phantom
    dataset: str
    folds: tuple[int, ...]
    profile: Profile
    samples: int  # T, the samples the sampler draws for the map (mc-dropout: an MC map's T, 1 for a one-pass map)
    device: str  # "cpu" or "cuda"
    seed: int
    out: Path
    recipe: Recipe  # the segmenter's recipe under the profile, with --loss and --iterations applied
    preprocess: PreprocessParams
    precision: Precision
    protocol: presets.Preset  # failure rule, correction, detector training data, curve and test conventions
    test_data: str | None = None  # an absolute held-out test set folder (--test-data), read like ``data``
    sampler: str = "mc-dropout"  # how predictive samples are drawn (a spec); absent from configs before samplers

    def record(self) -> dict[str, Any]:
        """The JSON form config.json holds (with PROVENANCE_KEYS added by the run)."""
        return fields_to_json(self)

    @classmethod
    def from_record(cls, record: dict[str, Any], where: str = "config") -> RunConfig:
        """The settings a config.json record holds; ValueError naming the first field that does not fit."""
        settings = {k: v for k, v in record.items() if k not in PROVENANCE_KEYS}
        config: RunConfig = fields_from_json(cls, settings, where)
        return config

    def identity(self) -> dict[str, Any]:
        """The settings that decide the results (a resumed run must match them): all but ``out``."""
        d = self.record()
        d.pop("out")
        return d

    def method(self, of: Kind[Any]) -> str | None:
        """The spec of the method of kind ``of`` this run uses (None: a detector was not asked for)."""
        return {SEGMENTER: self.segmenter, UNCERTAINTY: self.uncertainty, LOSS: self.loss, SAMPLER: self.sampler,
                DETECTOR: self.detector, DATASET: self.dataset}[of]

    def methods(self) -> dict[str, str]:
        """Kind name -> spec of every method this run uses."""
        return {k.name: spec for k in KINDS if (spec := self.method(k)) is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationConfig:
    """config.json of a ``uqbench evaluate`` folder: every option, paths absolute, and the versions that wrote it."""

    command: str = "evaluate"
    name: str  # the method that made the predictions, as a board shows it (e.g. nnunet-3d_fullres)
    predictions: str
    data: str
    dataset: str
    folds: list[int] | None  # the folds whose cases were scored; None: every case of the data
    probabilities: str | None
    uncertainty_maps: str | None
    uncertainty: str | None  # a map computed from the probabilities
    detector: str | None  # "oracle" or a registered detector
    protocol: str
    protocol_hash: str
    profile: str
    seed: int
    uqbench: str
    python: str

    def record(self) -> dict[str, Any]:
        return fields_to_json(self)


def read(path: Path) -> RunConfig:
    """The settings in a run's config.json; DataError naming the file when it is missing or malformed (or holds an
    evaluation's)."""
    made = read_folder(path)
    if isinstance(made, EvaluationConfig):
        raise DataError(f"{path}: an evaluation's configuration (uqbench evaluate), not a run's")
    return made


def read_folder(path: Path) -> RunConfig | EvaluationConfig:
    """The configuration in a results folder's config.json, a run's or an evaluation's; DataError naming the file
    when it is missing or malformed."""
    what = "run"
    try:
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("command") == "evaluate":
            what = "evaluation"
            evaluated: EvaluationConfig = fields_from_json(EvaluationConfig, record, "config")
            return evaluated
        return RunConfig.from_record(record)
    except FileNotFoundError:
        raise DataError(f"{path}: missing (not a run folder)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: malformed {what} configuration: {exc}") from None


def resolve_protocol(protocol: str, *, failure_preset: str | None = None, correction: str | None = None,
                     detector_training: str | None = None) -> presets.Preset:
    """The preset named by --protocol with its overrides; UsageError naming the option with an unknown value."""
    if protocol not in presets.PRESETS:
        raise UsageError(f"--protocol {protocol!r}: expected one of {', '.join(presets.PRESETS)}")
    if failure_preset is not None and failure_preset not in failure_rules.PRESETS:
        raise UsageError(f"--failure-preset {failure_preset!r}: expected one of {', '.join(failure_rules.PRESETS)}")
    if correction is not None and correction not in MODES:
        raise UsageError(f"--correction {correction!r}: expected one of {', '.join(MODES)}")
    if detector_training is not None and detector_training not in TRAINING_DATA:
        raise UsageError(f"--detector-training {detector_training!r}: expected one of {', '.join(TRAINING_DATA)}")
    return presets.preset(protocol, failure_preset=failure_preset, correction=correction,
                          detector_training=detector_training)


def fixed_count(drawn: Any, sampler: str, requested: int, *, one_pass: bool) -> bool:
    """Whether the sampler ``drawn`` draws the same T whatever is asked (tta's 8, ensemble:M's M), so that T is not
    the user's to set; a count() that raises is blamed on the sampler by name."""
    try:
        return bool(drawn.count(requested, one_pass=one_pass) == drawn.count(requested + 1, one_pass=one_pass))
    except Exception as exc:
        raise registry().fault(SAMPLER, sampler, f"failed counting its samples: {type(exc).__name__}: {exc}"
                               ) from exc


def resolve_samples(umap: Any, drawn: Any, *, uncertainty: str, sampler: str, samples: int | None) -> int:
    """T, the samples ``drawn`` (the sampler ``sampler``) draws for the map ``umap`` when asked for ``samples``
    (--samples; default the map's own T; ensemble:M:mc draws M of them); UsageError naming both when they do
    not fit: --samples on a one-pass map, a T other than the fixed one a sampler draws (tta's 8), or a map that
    needs T > 1 from a sampler that draws one sample."""
    one_pass = umap.samples == 1
    if samples is not None and samples < 1:
        raise UsageError(f"--samples {samples}: must be at least 1")
    if one_pass and samples not in (None, 1):
        raise UsageError(f"--samples {samples}: uncertainty map '{uncertainty}' reads one prediction (a one-pass map)")
    try:
        own = drawn.count(umap.samples, one_pass=one_pass)
        t = own if samples is None else drawn.count(samples, one_pass=one_pass)
    except Exception as exc:
        raise registry().fault(SAMPLER, sampler, f"failed counting its samples: {type(exc).__name__}: {exc}"
                               ) from exc
    if not isinstance(t, int) or isinstance(t, bool) or t < 1 or not isinstance(own, int) or own < 1:
        raise PluginError(f"sampler '{sampler}': count() gave {t!r}, not a whole number of 1 or more")
    if umap.samples > 1 and own == 1:
        raise UsageError(f"uncertainty map '{uncertainty}' needs T > 1 samples; sampler '{sampler}' draws one")
    if samples is not None and not one_pass and t != samples and fixed_count(drawn, sampler, samples, one_pass=False):
        raise UsageError(f"--samples {samples}: sampler '{sampler}' always draws {t} samples")
    return int(t)


def check_orientation(drawn: Any, recipe: Recipe, *, sampler: str, segmenter: str, profile: Profile) -> None:
    """UsageError naming both when the sampler ``drawn`` turns the slices (tta) but the segmenter's recipe kept
    their orientation in training (``Recipe.max_turn`` < 180): its net never saw a turned slice."""
    try:
        turns = turns_of(drawn)
    except ValueError as exc:
        raise registry().fault(SAMPLER, sampler, f"has a bad declaration: {exc}") from None
    if turns and not any_orientation(recipe.max_turn):
        raise UsageError(f"--sampler {sampler}: it turns the slices by quarter turns, but segmenter '{segmenter}' "
                         f"was trained keeping their orientation (its {profile.value} recipe's max_turn "
                         f"{recipe.max_turn:g} degrees)")


def resolve(*, segmenter: str, uncertainty: str, detector: str | None, loss: str | None, data: Path | None,
            dataset: str, folds: list[int], profile: str | None, samples: int | None, device: str, seed: int,
            out: Path | None, iterations: int | None = None, protocol: str = "uqbench",
            failure_preset: str | None = None, correction: str | None = None, precision: str = "auto",
            detector_training: str | None = None, test_data: Path | None = None, sampler: str = "mc-dropout"
            ) -> RunConfig:
    """Check every option against the registry and the machine; UsageError names the bad one."""
    reg = registry()
    seg = reg.create(SEGMENTER, segmenter)
    umap = reg.create(UNCERTAINTY, uncertainty)
    drawn = reg.create(SAMPLER, sampler)
    if detector is not None:
        reg.create(DETECTOR, detector)  # its arguments are checked before any work
    reg.entry(DATASET, dataset.split(":")[0])
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    prof = resolve_profile(profile, dev)
    try:
        recipe = seg.recipe(prof)
    except Exception as exc:
        raise reg.fault(SEGMENTER, segmenter, f"failed giving its {prof.value} recipe: {type(exc).__name__}: "
                                              f"{exc}") from exc
    if not isinstance(recipe, Recipe):
        raise PluginError(f"segmenter '{segmenter}': recipe({prof.value}) returned {type(recipe).__name__}, "
                          "not a uqbench.Recipe")
    recipe = replace(recipe, loss=loss) if loss else recipe
    if iterations is not None:
        if iterations < 1:
            raise UsageError(f"--iterations {iterations}: must be at least 1")
        recipe = replace(recipe, iterations=iterations)
    reg.create(LOSS, recipe.loss)  # its arguments too are checked before any work
    check_orientation(drawn, recipe, sampler=sampler, segmenter=segmenter, profile=prof)
    samples = resolve_samples(umap, drawn, uncertainty=uncertainty, sampler=sampler, samples=samples)
    chosen = resolve_protocol(protocol, failure_preset=failure_preset, correction=correction,
                              detector_training=detector_training)
    if data is not None and not data.is_dir():
        raise UsageError(f"--data {data}: not a folder")
    if test_data is not None and not test_data.is_dir():
        raise UsageError(f"--test-data {test_data}: not a folder")
    if not folds:
        raise UsageError("--folds: no fold given")
    if seed < 0:
        raise UsageError(f"--seed {seed}: must be 0 or more")
    if out is not None and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    source = "phantom" if data is None else data.name
    name = f"{segmenter}-{sampler}-{uncertainty}-{source}-{prof.value}"
    out = out or Path("runs") / name.replace(":", "_").replace("/", "_")
    return RunConfig(segmenter=segmenter, uncertainty=uncertainty, detector=detector, loss=recipe.loss,
                     data=None if data is None else str(data.resolve()), dataset=dataset, folds=tuple(folds),
                     profile=prof, samples=samples, device=dev, seed=seed, out=out, recipe=recipe,
                     preprocess=PreprocessParams(), precision=prec, protocol=chosen,
                     test_data=None if test_data is None else str(test_data.resolve()), sampler=sampler)
