"""`uqbench bench train` and `uqbench bench infer`: training and MC-inference throughput of a segmenter on
ACDC-sized synthetic slices, on the device at hand. Absolute figures mean something only on the device
they were measured on; the inference benchmark also times the alternatives side by side (samples one at a
time or all in one batch; running moments or stacked samples), whose ratios travel.
"""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.api import Profile, context_of, inputs_per_call, window_of
from uqbench.bench.metrics import heart
from uqbench.devices import channels_last, prepare_host

SLICE = (224, 224)  # an ACDC slice on the 1.4 mm grid is about this size


def _slices(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    labels = heart(rng, (n + 2, *SLICE))[1:-1]
    images = np.clip(labels * 0.25 + rng.normal(0.2, 0.05, labels.shape), 0, 1).astype(np.float32)
    return list(zip(images, labels, strict=True))


def _peak_memory(device: str) -> dict[str, float]:
    import torch

    if device == "cuda":
        return {"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _host(default_heap: bool, lazy_constants: bool) -> None:
    """The run's host settings, or those with glibc's default heap or libtorch's constants left unmapped:
    process-wide settings that hold from then on, so each is timed by a second benchmark run, not by a variant
    beside the others."""
    prepare_host(heap=not default_heap, constants=not lazy_constants)


def train_speed(segmenter: str, *, profile: Profile, iterations: int, device: str, seed: int = 0,
                compile_model: bool = False, precision: str = "fp32", channels_first: bool = False,
                default_heap: bool = False, lazy_constants: bool = False) -> dict[str, Any]:
    """Iterations and images per second of the recipe's training step, after a few warm-up steps (which
    also pay for compilation), and the time the full recipe would take at that pace; ``channels_first``
    times the layout the run does not use, ``default_heap`` glibc's default heap, ``lazy_constants`` libtorch's
    constants left to be mapped as they are read (uqbench.devices)."""
    import torch

    from uqbench.registry import registry
    from uqbench.train.loop import train

    _host(default_heap, lazy_constants)
    reg = registry()
    seg = reg.create("segmenter", segmenter)
    recipe = seg.recipe(profile)
    loss = reg.create("loss", recipe.loss)
    data = _slices(20, seed)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        warm = min(5, iterations)
        train(segmenter=seg, recipe=replace(recipe, iterations=warm), loss=loss, slices=data, device=device, seed=seed,
              checkpoint=Path(tmp) / "warm.pt", compile_model=compile_model, precision=precision,
              channels_first=channels_first)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train(segmenter=seg, recipe=replace(recipe, iterations=iterations), loss=loss, slices=data, device=device,
              seed=seed, checkpoint=Path(tmp) / "timed.pt", compile_model=compile_model, precision=precision,
              channels_first=channels_first)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
    its = iterations / elapsed
    return {"segmenter": segmenter, "profile": profile.value, "device": device, "iterations": iterations,
            "compiled": compile_model, "precision": precision, "channels_first": channels_first,
            "default_heap": default_heap, "lazy_constants": lazy_constants,
            "batch_size": recipe.batch_size, "patch_size": recipe.patch_size, "iterations_per_s": its,
            "images_per_s": its * recipe.batch_size, "full_recipe_s": recipe.iterations / its,
            **_peak_memory(device)}


def other_chunks(device: str, run: int | None) -> list[int | None]:
    """The inputs-per-call limits timed beside the run's: on a CPU 1, 2, 4 and a whole call less the run's own;
    none on CUDA, where a run never splits a call (uqbench.api.inputs_per_call), so no variant would be one it uses."""
    return [n for n in (None, 1, 2, 4) if n != run] if device == "cpu" else []


def infer_speed(segmenter: str, uncertainty: str, *, samples: int, volumes: int, device: str,
                width: float | None = None, seed: int = 0, precision: str = "fp32", sampler: str = "mc-dropout",
                default_heap: bool = False, lazy_constants: bool = False) -> dict[str, Any]:
    """Seconds per 10-slice volume of inference drawing ``samples`` samples with ``sampler`` (from untrained
    members) at ``precision``, as a run draws them (the first variant) and, beside it, for passes all in one
    batch, with the map from stacked samples, at the other precision, with channels-first tensors, and on a CPU
    with other numbers of inputs per network call (``other_chunks``); ``default_heap`` times them all with
    glibc's default heap in place of the run's, ``lazy_constants`` with libtorch's constants left unmapped
    (uqbench.devices)."""
    import torch

    from uqbench.infer.sampling import Drawer, predict_volume
    from uqbench.registry import registry

    _host(default_heap, lazy_constants)
    reg = registry()
    seg = reg.create("segmenter", segmenter)
    umap = reg.create("uncertainty", uncertainty)
    drawn = reg.create("sampler", sampler)
    recipe = seg.recipe(Profile.QUICK if device == "cpu" else Profile.PAPER)
    w = width if width is not None else recipe.width
    window = window_of(seg, recipe)  # as a run predicts it
    models = []
    for m in range(drawn.members):
        torch.manual_seed(seed + m)
        models.append(seg.build(in_channels=1, num_classes=4, dropout=0.1, width=w).to(device))
    images = [np.stack([s for s, _ in _slices(10, seed + v)]) for v in range(volumes)]

    def drawer(per_pass: int, prec: str, last: bool, *, chunk: int | None) -> Drawer:
        for m in models:
            channels_last(m, last)
        return Drawer(sampler=drawn, models=models, multiple=seg.size_multiple, context=context_of(seg),
                      device=device, precision=prec, per_pass=per_pass, window=window, chunk=chunk)

    class Stacked:  # the same map without from_moments: the harness stacks the samples
        name, samples = umap.name, umap.samples

        def __call__(self, probs: Any) -> Any:
            return umap(probs)

    other = "fp32" if precision == "bf16" else "bf16"
    base = "one sample per pass, running moments"
    run = inputs_per_call(seg, device)  # as a run predicts
    variants = {base: (umap, 1, precision, True, run),
                f"{samples} samples per pass, running moments": (umap, samples, precision, True, run),
                "one sample per pass, stacked samples": (Stacked(), 1, precision, True, run),
                f"{base}, {other}": (umap, 1, other, True, run),
                f"{base}, channels-first": (umap, 1, precision, False, run)}
    for n in other_chunks(device, run):
        variants[f"{base}, {'all inputs' if n is None else n} per network call"] = (umap, 1, precision, True, n)
    out: dict[str, Any] = {"segmenter": segmenter, "sampler": sampler, "uncertainty": uncertainty, "samples": samples,
                           "width": w, "device": device, "precision": precision, "volumes": volumes,
                           "inputs_per_call": run,
                           "seconds_per_volume": {}}
    totals = dict.fromkeys(variants, 0.0)
    for m, per_pass, prec, last, chunk in variants.values():  # warm-up
        predict_volume(drawer(per_pass, prec, last, chunk=chunk), images[0], umap=m, samples=samples, seed=seed)
    for i, img in enumerate(images):  # variants interleaved, so drifting machine load hits them alike
        for label, (m, per_pass, prec, last, chunk) in variants.items():
            d = drawer(per_pass, prec, last, chunk=chunk)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            predict_volume(d, img, umap=m, samples=samples, seed=seed + i)
            if device == "cuda":
                torch.cuda.synchronize()
            totals[label] += time.perf_counter() - t0
    out["seconds_per_volume"] = {label: t / volumes for label, t in totals.items()}
    return out | _peak_memory(device)
