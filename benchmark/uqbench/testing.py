"""The contract kit: the checks every plugin of a kind must pass, for our suite and for third parties.

Two layers over one set of checks:

- ``check_<kind>(method)`` functions raise ``AssertionError`` naming the method; our suite runs them
  over every registered method.
- ``<Kind>Contract`` base classes wrap the same checks as pytest tests. A third party's whole test file:

      from uqbench.testing import SegmenterContract

      class TestMyNet(SegmenterContract):
          name = "my-net"

The contract classes are plain classes pytest collects by their ``test_`` methods (the detector's takes pytest's
``tmp_path``); the check functions need only torch.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from uqbench.api import (
    NUM_CLASSES,
    PATCH,
    Context,
    DetectorExample,
    Profile,
    Recipe,
    context_of,
    cpu_inputs_per_call_of,
    turns_of,
    windowed_of,
)
from uqbench.registry import NAME_RE, registry


def _who(method: Any) -> str:
    return f"{type(method).__name__} ('{getattr(method, 'name', '?')}')"


def _check_names(method: Any) -> None:
    assert isinstance(method.name, str) and NAME_RE.match(method.name), f"{_who(method)}: bad name"
    assert inspect.getdoc(type(method)), f"{_who(method)}: the class needs a docstring"


def check_segmenter(seg: Any) -> None:
    """Logit shapes at every size multiple, finite gradients, MC dropout varies while batch norm stays
    frozen, seeded builds agree, and each profile's recipe is usable."""
    import torch

    from uqbench.infer.sampling import mc_mode

    who = _who(seg)
    _check_names(seg)
    m = seg.size_multiple
    assert isinstance(m, int) and m >= 1, f"{who}: size_multiple must be a positive int"
    try:
        c = context_of(seg)
        windowed_of(seg)
        cpu_inputs_per_call_of(seg)
    except ValueError as exc:
        raise AssertionError(f"{who}: {exc}") from None
    for profile in Profile:
        recipe = seg.recipe(profile)
        assert isinstance(recipe, Recipe), f"{who}: recipe({profile}) is not a Recipe"
        assert recipe.patch_size % m == 0, f"{who}: {profile} patch size is not a multiple of {m}"
        assert recipe.schedule in ("step", "snapshot", "poly"), f"{who}: {profile} schedule {recipe.schedule!r}"
        assert 0 <= recipe.spatial <= 1 and 0 <= recipe.intensity <= 1, f"{who}: {profile} augmentation shares"
        assert 0 <= recipe.max_turn <= 180, f"{who}: {profile} max_turn {recipe.max_turn} outside [0, 180] degrees"
        registry().entry("loss", recipe.loss.split(":")[0])
    width = seg.recipe(Profile.QUICK).width
    torch.manual_seed(0)
    net = seg.build(in_channels=1, num_classes=NUM_CLASSES, dropout=0.1, width=width)
    assert isinstance(net, torch.nn.Module), f"{who}: build() must return a torch.nn.Module"
    net.train()
    hint = f"is size_multiple = {m} right? Inputs are any multiple of it" + (f", plus {c} on each side" if c else "")
    for k in (1, 2, 3):
        x = torch.rand(2, 1, k * m + 2 * c, (k + 1) * m + 2 * c)
        try:
            out = net(x)
        except RuntimeError as exc:
            raise AssertionError(f"{who}: forward pass failed on input {tuple(x.shape)} ({hint}): {exc}") from exc
        expect = (2, NUM_CLASSES, k * m, (k + 1) * m)
        assert out.shape == expect, f"{who}: logits {tuple(out.shape)} for input {tuple(x.shape)} ({hint})"
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), f"{who}: logits not finite float32"
    out.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), f"{who}: non-finite gradients"
    x = torch.rand(2, 1, 2 * m + 2 * c, 2 * m + 2 * c)
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    mc_mode(net)
    with torch.no_grad():
        a, b = net(x), net(x)
    assert not torch.equal(a, b), f"{who}: two MC-dropout passes are identical (no Dropout module active?)"
    for key, value in net.state_dict().items():
        assert torch.equal(value, buffers[key]), f"{who}: '{key}' changed during MC sampling (batch norm not frozen)"
    outs = []
    for _ in range(2):
        torch.manual_seed(1)
        n = seg.build(in_channels=1, num_classes=NUM_CLASSES, dropout=0.1, width=width).eval()
        with torch.no_grad():
            outs.append(n(x))
    assert torch.equal(outs[0], outs[1]), f"{who}: two builds after the same seed differ"


def check_loss(loss: Any) -> None:
    """A finite differentiable scalar, lower for right logits than wrong ones, fine with absent classes."""
    import torch

    who = _who(loss)
    _check_names(loss)
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, 2:6, 2:6] = 3  # classes 1 and 2 absent
    right = (torch.nn.functional.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float() * 10).requires_grad_()
    wrong = torch.roll(right.detach(), 1, dims=1).requires_grad_()
    lr, lw = loss(right, labels), loss(wrong, labels)
    assert lr.ndim == 0 and torch.isfinite(lr) and lr.requires_grad, f"{who}: not a finite differentiable scalar"
    assert lr < lw, f"{who}: right logits ({float(lr):.4f}) do not score lower than wrong ones ({float(lw):.4f})"
    lr.backward()
    assert right.grad is not None and torch.isfinite(right.grad).all(), f"{who}: non-finite gradient"


def check_uncertainty_map(um: Any) -> None:
    """[B, H, W] float in [0, 1]; zero for identical one-hot samples; independent of sample order; no NaN."""
    import torch

    who = _who(um)
    _check_names(um)
    t = um.samples
    assert isinstance(t, int) and t >= 1, f"{who}: samples must be an int >= 1"
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(t, 2, NUM_CLASSES, 5, 6, generator=g).softmax(2)
    out = um(probs)
    assert out.shape == (2, 5, 6) and out.is_floating_point(), f"{who}: output {tuple(out.shape)}, expected (2, 5, 6)"
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, f"{who}: values outside [0, 1] " + _spread(
        out.detach().float().numpy())
    if t > 1:
        perm = um(probs[torch.randperm(t, generator=g)])
        assert torch.allclose(out, perm, atol=1e-6), f"{who}: depends on the order of the samples"
    onehot = torch.zeros(t, 2, NUM_CLASSES, 5, 6)
    onehot[:, :, 1] = 1
    assert torch.allclose(um(onehot), torch.zeros(2, 5, 6), atol=1e-6), f"{who}: identical one-hot samples are not 0"
    assert torch.isfinite(um(onehot)).all(), f"{who}: probabilities with zeros give NaN"
    if hasattr(um, "from_moments"):
        from uqbench.api import MOMENTS
        from uqbench.infer.sampling import moments

        needs = getattr(um, "needs", MOMENTS)
        assert set(needs) <= set(MOMENTS), f"{who}: needs {sorted(needs)}, expected a subset of {MOMENTS}"
        try:  # the statistics it did not declare are None
            streamed = um.from_moments(moments(probs, needs))
        except (TypeError, AttributeError, AssertionError) as exc:
            raise AssertionError(f"{who}: from_moments fails with only {sorted(needs)} given "
                                 f"(declare what it reads in needs): {exc}") from exc
        assert torch.allclose(streamed, out, atol=1e-5), f"{who}: from_moments differs from the stacked map"


def _tiny_net(seed: int) -> Any:
    """A seeded two-layer convolutional net with dropout, what the sampler checks draw from."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.Conv2d(8, NUM_CLASSES, 1))


def check_sampler(sampler: Any) -> None:
    """``members`` and ``count`` are positive ints, ``turns`` (if declared) a bool; ``draw`` yields ``count``
    softmax samples of the right shape (checked as the harness checks them) for a one-pass and an MC map, on square
    and oblong slices, and the same samples again from the same seed."""
    import torch

    from uqbench.errors import MethodFault
    from uqbench.infer.sampling import Drawer

    who = _who(sampler)
    _check_names(sampler)
    m = sampler.members
    assert isinstance(m, int) and not isinstance(m, bool) and m >= 1, f"{who}: members must be an int >= 1"
    try:
        turns_of(sampler)
    except ValueError as exc:
        raise AssertionError(f"{who}: {exc}") from None
    drawer = Drawer(sampler=sampler, models=[_tiny_net(i) for i in range(m)], multiple=1)
    image = torch.rand(2, 12, 12 + 4, generator=torch.Generator().manual_seed(0)).numpy()
    for one_pass in (True, False):
        for requested in (1, 3):
            t = sampler.count(requested, one_pass=one_pass)
            assert isinstance(t, int) and not isinstance(t, bool) and t >= 1, \
                f"{who}: count({requested}, one_pass={one_pass}) gave {t!r}, not an int >= 1"
            for img in (image, image[:, :, :12]):
                with torch.inference_mode():
                    try:
                        a, b = (torch.cat(list(drawer.passes(img, one_pass=one_pass, samples=t, seed=5)))
                                for _ in range(2))
                    except MethodFault as exc:
                        raise AssertionError(f"{who}: {exc.detail}") from None
                assert a.shape == (t, 2, NUM_CLASSES, *img.shape[1:]), f"{who}: samples {tuple(a.shape)}"
                assert torch.equal(a, b), f"{who}: two draws with the same seed differ"


def tiny_examples(n: int = 6, seed: int = 0) -> list[DetectorExample]:
    """Synthetic 44 x 52 ring slices with planted failures (a missing bite of ring) and uncertainty over them."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[:44, :52]
    for i in range(n):
        r = np.hypot(yy - 22 + rng.integers(-3, 4), xx - 26 + rng.integers(-3, 4))
        ref = np.where(r < 8, 3, np.where(r < 13, 2, 0)).astype(np.uint8)
        seg = ref.copy()
        failures = np.zeros(ref.shape, bool)
        if i % 2 == 0:  # plant a failure: a bite out of the ring
            bite = (np.hypot(yy - 12, xx - 26) < 5) & (ref == 2)
            seg[bite] = 0
            failures = bite
        unc = np.clip(0.1 * rng.random(ref.shape) + 0.8 * failures + 0.2 * (np.abs(r - 13) < 1), 0, 1)
        noise = 0.05 * rng.standard_normal(ref.shape)
        image = np.clip(np.where(ref == 3, 0.9, np.where(ref == 2, 0.3, 0.5)) + noise, 0, 1)
        out.append(DetectorExample(image=image.astype(np.float32), uncertainty=unc.astype(np.float32), segmentation=seg,
                                   failures=failures))
    return out


def _spread(values: np.ndarray) -> str:
    """'(min .., max .., N NaN)' of an array's finite values, for a failed range check."""
    finite = values[np.isfinite(values)]
    low, high = (f"{finite.min():.4g}", f"{finite.max():.4g}") if finite.size else ("-", "-")
    return f"(min {low}, max {high}, {int(np.isnan(values).sum())} NaN, {int(np.isinf(values).sum())} infinite)"


def check_detector(det: Any, tmp_path: Path, make: Callable[[], Any] | None = None) -> None:
    """fit on tiny_examples(); predict [ceil(Y/8), ceil(X/8)] in [0, 1] without labels; save/load round-trips
    into a new instance (``make()``, default the class called without arguments)."""
    who = _who(det)
    _check_names(det)
    examples = tiny_examples()
    det.fit(examples, Context(profile=Profile.QUICK, device="cpu", seed=0, workdir=tmp_path))
    probe = replace(examples[0], failures=None)
    p = np.asarray(det.predict(probe))
    shape = (-(-44 // PATCH), -(-52 // PATCH))
    assert p.shape == shape, f"{who}: predict() gave {p.shape}, expected {shape}"
    assert np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1, f"{who}: probabilities outside [0, 1] " + _spread(
        p.astype(np.float64))
    det.save(tmp_path / "state")
    fresh = make() if make else type(det)()
    fresh.load(tmp_path / "state")
    assert np.array_equal(np.asarray(fresh.predict(probe)), p), f"{who}: save/load changes predictions"


def check_dataset(ds: Any) -> None:
    """Clean data yields well-typed cases (labels in 0..3, matching shapes, finite affine, positive
    spacing, unique patient per phase) and folds() covers every patient."""
    who = _who(ds)
    _check_names(ds)
    assert ds.problems() == [], f"{who}: problems on clean data: {ds.problems()[:3]}"
    cases = list(ds.cases())
    assert cases, f"{who}: no cases"
    seen = set()
    for c in cases:
        assert c.image.dtype == np.float32 and c.image.ndim == 3, f"{who}: {c.patient} image not float32 [Z, Y, X]"
        assert c.labels is not None and c.labels.dtype == np.uint8 and c.labels.shape == c.image.shape, \
            f"{who}: {c.patient} labels not uint8 of the image's shape"
        assert set(np.unique(c.labels)) <= {0, 1, 2, 3}, f"{who}: {c.patient} labels outside 0..3"
        assert c.affine.shape == (4, 4) and np.isfinite(c.affine).all(), f"{who}: {c.patient} affine"
        assert len(c.spacing) == 3 and min(c.spacing) > 0, f"{who}: {c.patient} spacing"
        assert (c.patient, c.phase) not in seen, f"{who}: {c.patient} {c.phase} twice"
        seen.add((c.patient, c.phase))
    folds = ds.folds()
    assert set(folds) <= {c.patient for c in cases}, f"{who}: folds() names patients cases() does not give"
    assert set(folds.values()) <= set(range(4)), f"{who}: folds() gives a fold outside 0..3"
    assert ds.fingerprint() == ds.fingerprint(), f"{who}: fingerprint is not stable"


class _Contract:
    kind: ClassVar[str]
    name: ClassVar[str]  # a spec: "my-net", or with arguments "my-net:64"
    variants: ClassVar[tuple[str, ...]] = ()  # more specs checked the same way, e.g. ("my-net:32",)

    def specs(self) -> tuple[str, ...]:
        return (self.name, *self.variants)

    def create(self, spec: str) -> Any:
        """The registered method (creating it also proves the entry point is installed)."""
        return registry().create(self.kind, spec)


class SegmenterContract(_Contract):
    """Subclass in your tests and set ``name`` (and optionally ``variants``, more ``name:arg`` specs); pytest then
    runs the segmenter checks on each."""

    kind = "segmenter"

    def test_segmenter_contract(self) -> None:
        for spec in self.specs():
            check_segmenter(self.create(spec))


class LossContract(_Contract):
    """Subclass and set ``name`` to check a loss."""

    kind = "loss"

    def test_loss_contract(self) -> None:
        for spec in self.specs():
            check_loss(self.create(spec))


class UncertaintyMapContract(_Contract):
    """Subclass and set ``name`` to check an uncertainty map."""

    kind = "uncertainty"

    def test_uncertainty_map_contract(self) -> None:
        for spec in self.specs():
            check_uncertainty_map(self.create(spec))


class SamplerContract(_Contract):
    """Subclass and set ``name`` to check a sampler."""

    kind = "sampler"

    def test_sampler_contract(self) -> None:
        for spec in self.specs():
            check_sampler(self.create(spec))


class DetectorContract(_Contract):
    """Subclass and set ``name`` to check a detector."""

    kind = "detector"

    def test_detector_contract(self, tmp_path: Path) -> None:
        for i, spec in enumerate(self.specs()):
            folder = tmp_path / str(i)
            folder.mkdir()
            check_detector(self.create(spec), folder, functools.partial(self.create, spec))


class DatasetContract:
    """Subclass, set ``name`` and give a ``root`` fixture (a small clean dataset folder)."""

    name: ClassVar[str]

    def test_dataset_contract(self, root: Path) -> None:
        check_dataset(registry().create("dataset", self.name, root))


