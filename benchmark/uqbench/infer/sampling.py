"""Inference: predictive samples of a volume's slices drawn by a sampler plugin (MC dropout, an ensemble,
test-time augmentation) from a fold's trained model(s), reduced to running moments or stacked for a map."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from uqbench.api import MOMENTS, NUM_CLASSES, MomentMap, Moments, Sampler, UncertaintyMap
from uqbench.devices import autocast
from uqbench.errors import MethodFault
from uqbench.infer.maps import map_of
from uqbench.infer.windows import predict_windowed


def mc_mode(model: nn.Module) -> nn.Module:
    """Inference mode for everything (batch norm uses its running statistics) except dropout layers."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    return model


class _Accumulator:
    """Running mean, sum of squared deviations (Welford's update, and Chan et al.'s for a group of samples:
    stable in float32, unlike E[p^2] - E[p]^2) and summed entropy of softmax samples. Only the statistics
    in ``needs`` are kept; updates are in place, so memory stays at a few copies of one sample."""

    def __init__(self, needs: Iterable[str] = MOMENTS) -> None:
        self.variance, self.entropy = "variance" in needs, "mean_entropy" in needs
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.se: torch.Tensor | None = None

    def add(self, p: torch.Tensor) -> None:
        """Add samples [S, B, C, H, W]."""
        k = p.shape[0]
        if self.entropy:
            ent = torch.special.entr(p).sum((0, 2))  # entr(x) = -x log x, and 0 at x = 0
            self.se = ent if self.se is None else self.se.add_(ent)
        if self.mean is None:
            self.n, self.mean = k, p.mean(0)
            if self.variance:
                self.m2 = ((p - self.mean) ** 2).sum(0)
            return
        n = self.n + k
        if k == 1:
            delta = p[0] - self.mean
            self.mean.add_(delta, alpha=1 / n)
            if self.m2 is not None:
                self.m2.addcmul_(delta, p[0] - self.mean)
        else:
            mean_p = p.mean(0)
            delta = mean_p - self.mean
            if self.m2 is not None:
                self.m2.add_(((p - mean_p) ** 2).sum(0)).addcmul_(delta, delta, value=self.n * k / n)
            self.mean.add_(delta, alpha=k / n)
        self.n = n

    def result(self) -> Moments:
        assert self.mean is not None
        var = None if self.m2 is None else self.m2 / self.n
        ent = None if self.se is None else self.se / self.n
        return Moments(samples=self.n, mean=self.mean, variance=var, mean_entropy=ent)


def moments(probs: torch.Tensor, needs: Iterable[str] = MOMENTS) -> Moments:
    """The running statistics of stacked samples [T, B, C, H, W] (what inference accumulates)."""
    acc = _Accumulator(needs)
    for p in probs.float():
        acc.add(p[None])
    return acc.result()


class _Forward:
    """The ``Forward`` a sampler draws with: a fold's trained models under the run's device and precision, each
    switched between inference and MC mode only when a call asks for the other, with the logits' shape checked.
    With ``chunk`` set, a call's inputs go through the network at most ``chunk`` at a time (Drawer.chunk)."""

    def __init__(self, models: Sequence[nn.Module], *, device: str, precision: str, context: int,
                 window: int | None = None, chunk: int | None = None) -> None:
        self.models, self.device, self.precision, self.context = models, device, precision, context
        self.window, self.chunk = window, chunk
        self.stochastic: list[bool | None] = [None] * len(models)

    def __call__(self, x: torch.Tensor, *, member: int = 0, stochastic: bool = False) -> torch.Tensor:
        if not 0 <= member < len(self.models):
            raise MethodFault("sampler", f"asked for member {member} of {len(self.models)} trained model(s)")
        model = self.models[member]
        if self.stochastic[member] is not stochastic:
            mc_mode(model) if stochastic else model.eval()
            self.stochastic[member] = stochastic
        if self.chunk is not None and x.shape[0] > self.chunk:
            return torch.cat([self._whole(model, part) for part in x.split(self.chunk)])
        return self._whole(model, x)

    def _whole(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The softmax of ``x`` in one network call, or in windows of one."""
        if self.window is None:
            return self._softmax(model, x)
        return predict_windowed(lambda t: self._softmax(model, t), x, window=self.window, context=self.context)

    def _softmax(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The network's softmax on ``x``, its failures and wrongly shaped logits blamed on the segmenter."""
        try:
            with autocast(self.device, self.precision):
                logits = model(x)
        except (MethodFault, KeyboardInterrupt, OSError):
            raise
        except Exception as exc:  # the network's own failure, whichever sampler called it
            raise MethodFault("segmenter", f"the network failed on input {tuple(x.shape)}: {type(exc).__name__}: "
                                           f"{exc}") from exc
        c = self.context
        out_size = (x.shape[-2] - 2 * c, x.shape[-1] - 2 * c)
        if logits.shape[1:] != (NUM_CLASSES, *out_size):
            raise MethodFault("segmenter", f"the network returned logits {tuple(logits.shape)} for input "
                                           f"{tuple(x.shape)}; expected {NUM_CLASSES} classes at {out_size} (the "
                                           f"input less {c} voxels of context on each side)")
        return logits.float().softmax(1)


def _check_samples(p: torch.Tensor, shape: tuple[int, ...]) -> None:
    """MethodFault blaming the sampler unless ``p`` is softmax samples [k, *shape]: finite, in [0, 1], summing to
    1 over the classes."""
    if p.ndim != 5 or tuple(p.shape[1:]) != shape or p.shape[0] < 1:
        raise MethodFault("sampler", f"yielded samples of shape {tuple(p.shape)}; expected [k, "
                                     f"{', '.join(map(str, shape))}]")
    if not torch.isfinite(p).all():
        raise MethodFault("sampler", "yielded samples holding NaN or infinite values")
    if p.min() < 0 or p.max() > 1 or (p.sum(2) - 1).abs().max() > 1e-3:
        raise MethodFault("sampler", "yielded samples that are not probabilities (outside [0, 1], or not summing "
                                     "to 1 over the classes)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Drawer:
    """How one fold's samples are drawn: the sampler, the trained models it draws from, and the segmenter's and
    the run's settings the passes need."""

    sampler: Sampler
    models: Sequence[nn.Module]
    multiple: int  # the segmenter's size_multiple
    context: int = 0  # the segmenter's context
    device: str = "cpu"
    precision: str = "fp32"
    per_pass: int | None = None  # passes per forward call; None: all T on CUDA, one at a time on CPU
    window: int | None = None  # predict in windows of this size (uqbench.infer.windows); None: whole slices
    chunk: int | None = None  # most inputs per network call (a segmenter's cpu_inputs_per_call); None: a call's all

    def passes(self, image: np.ndarray, *, one_pass: bool, samples: int, seed: int) -> Iterator[torch.Tensor]:
        """Softmax samples [k, Z, C, Y, X] of a [Z, Y, X] image, ``samples`` in all, after seeding torch's
        generator with ``seed``; each group checked. Slices are zero-padded at the bottom and right to a multiple
        of ``multiple`` (and at least to ``window``: training pads slices smaller than a patch so too) and by
        ``context`` on every side (the network returns the slice without that margin)."""
        h, w = image.shape[1:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if self.window is not None:
            ph, pw = max(ph, self.window - h), max(pw, self.window - w)
        c = self.context
        x = torch.from_numpy(np.pad(image, ((0, 0), (c, ph + c), (c, pw + c)))[:, None]).to(self.device)
        forward = _Forward(self.models, device=self.device, precision=self.precision, context=c, window=self.window,
                           chunk=self.chunk)
        torch.manual_seed(seed)
        group = self.per_pass or (samples if x.is_cuda else 1)
        shape = (x.shape[0], NUM_CLASSES, h + ph, w + pw)
        done = 0
        for p in self.sampler.draw(forward, x, samples=samples, one_pass=one_pass, group=group):
            _check_samples(p, shape)
            done += p.shape[0]
            if done > samples:
                break
            yield p[..., :h, :w]
        if done != samples:
            raise MethodFault("sampler", f"yielded {done} samples where its count() says {samples}")


@torch.inference_mode()
def predict_volume(drawer: Drawer, image: np.ndarray, *, umap: UncertaintyMap, samples: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(mean softmax [Z, C, Y, X], uncertainty [Z, Y, X]) for a [Z, Y, X] image on the network grid, from the
    ``samples`` samples the drawer's sampler draws for ``umap`` (a one-pass map, ``umap.samples == 1``, asks for
    the sampler's one-pass prediction: MC dropout's deterministic pass). Maps with ``from_moments`` get running
    sums and the T samples are never held together; other maps get the stacked samples. ``precision`` bf16 runs
    the forward passes under bf16 autocast (uqbench.devices); the softmax is always taken in float32."""
    streaming = isinstance(umap, MomentMap)
    acc, stacked = _Accumulator(getattr(umap, "needs", MOMENTS)), []
    for p in drawer.passes(image, one_pass=umap.samples == 1, samples=samples, seed=seed):
        if streaming:
            acc.add(p)
        else:
            stacked.append(p)
    if streaming:
        m = acc.result()
        unc, mean = map_of(umap, moments=m), m.mean
    else:
        probs = torch.cat(stacked)
        unc, mean = map_of(umap, samples=probs), probs.mean(0)
    return mean.cpu().numpy(), unc.float().cpu().numpy()


@torch.inference_mode()
def sample_volume(drawer: Drawer, image: np.ndarray, *, one_pass: bool, samples: int, seed: int
                  ) -> dict[str, np.ndarray]:
    """The running statistics of the ``samples`` samples the drawer draws over a [Z, Y, X] image, as float32
    arrays: ``mean`` [Z, C, Y, X], and, unless ``one_pass``, ``variance`` and ``mean_entropy`` [Z, Y, X] too,
    which is all any moment-based map reads (a one-pass map reads the mean alone, see
    ``uqbench.infer.maps.as_moments``). The passes are those of :func:`predict_volume`, with the same seed."""
    acc = _Accumulator(() if one_pass else MOMENTS)
    for p in drawer.passes(image, one_pass=one_pass, samples=samples, seed=seed):
        acc.add(p)
    m = acc.result()
    out = {"mean": m.mean.cpu().numpy()}
    if not one_pass:
        assert m.variance is not None and m.mean_entropy is not None
        out |= {"variance": m.variance.cpu().numpy(), "mean_entropy": m.mean_entropy.cpu().numpy()}
    return out
