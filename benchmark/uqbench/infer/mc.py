"""MC-dropout inference: dropout sampling on, batch norm frozen, T passes per slice batch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from uqbench.api import MOMENTS, NUM_CLASSES, MomentMap, Moments, UncertaintyMap
from uqbench.devices import autocast
from uqbench.errors import MethodFault
from uqbench.infer.maps import map_of


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


def _passes(model: nn.Module, image: np.ndarray, *, stochastic: bool, samples: int, multiple: int, device: str,
            seed: int, per_pass: int | None, precision: str, context: int) -> Iterator[torch.Tensor]:
    """Softmax samples [k, Z, C, Y, X] of a [Z, Y, X] image, ``samples`` in all, in groups of ``per_pass``
    (default: all T on CUDA, where one large batch is fastest, one at a time on CPU, where stacking is slower).
    ``stochastic`` keeps dropout on (MC dropout); otherwise everything is in inference mode."""
    h, w = image.shape[1:]
    ph, pw = -h % multiple, -w % multiple
    c = context
    x = torch.from_numpy(np.pad(image, ((0, 0), (c, ph + c), (c, pw + c)))[:, None]).to(device)
    out_size = (h + ph, w + pw)
    if stochastic:
        mc_mode(model)
    else:
        model.eval()
    torch.manual_seed(seed)
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    group = per_pass or (samples if x.is_cuda else 1)
    done = 0
    while done < samples:
        k = min(group, samples - done)
        with autocast(device, precision):
            logits = model(x.repeat(k, 1, 1, 1))
        if logits.shape[1:] != (NUM_CLASSES, *out_size):
            raise MethodFault("segmenter", f"the network returned logits {tuple(logits.shape)} for input "
                                           f"{(k * x.shape[0], *x.shape[1:])}; expected {NUM_CLASSES} classes at "
                                           f"{out_size} (the input less {c} voxels of context on each side)")
        out = logits.float().softmax(1)[..., :h, :w]
        yield out.view(k, x.shape[0], *out.shape[1:])
        done += k


@torch.inference_mode()
def predict_volume(model: nn.Module, image: np.ndarray, *, umap: UncertaintyMap, samples: int, multiple: int,
                   device: str, seed: int, per_pass: int | None = None, precision: str = "fp32", context: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(mean softmax [Z, C, Y, X], uncertainty [Z, Y, X]) for a [Z, Y, X] image on the network grid.

    A map that declares one sample (``umap.samples == 1``, e.g. emap) gets one deterministic pass, dropout off;
    an MC map gets MC dropout with ``samples`` passes, one stochastic pass when ``samples == 1`` (the paper's
    Table V, T = 1, row), ``per_pass`` at a time. Maps with ``from_moments`` get running sums and the T samples
    are never held together; other maps get the stacked samples. ``precision`` bf16 runs the forward passes
    under bf16 autocast (uqbench.devices); the softmax is always taken in float32. On CUDA the input is
    channels-last. Slices are zero-padded at the bottom and right to a multiple of the network's ``multiple``,
    and by the segmenter's ``context`` on every side (its network returns the slice without that margin)."""
    streaming = isinstance(umap, MomentMap)
    acc, stacked = _Accumulator(getattr(umap, "needs", MOMENTS)), []
    for p in _passes(model, image, stochastic=umap.samples > 1, samples=samples, multiple=multiple, device=device,
                     seed=seed, per_pass=per_pass, precision=precision, context=context):
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
def sample_volume(model: nn.Module, image: np.ndarray, *, stochastic: bool, samples: int, multiple: int,
                  device: str, seed: int, per_pass: int | None = None, precision: str = "fp32", context: int = 0
                  ) -> dict[str, np.ndarray]:
    """The running statistics of ``samples`` softmax passes over a [Z, Y, X] image, as float32 arrays: ``mean``
    [Z, C, Y, X], and, for MC dropout (``stochastic``), ``variance`` and ``mean_entropy`` [Z, Y, X] too, which
    is all any moment-based map reads (a deterministic pass has variance 0 and its mean's entropy, see
    ``uqbench.infer.maps.as_moments``). The passes are those of :func:`predict_volume`, with the same seed."""
    acc = _Accumulator(MOMENTS if stochastic else ())
    for p in _passes(model, image, stochastic=stochastic, samples=samples, multiple=multiple, device=device,
                     seed=seed, per_pass=per_pass, precision=precision, context=context):
        acc.add(p)
    m = acc.result()
    out = {"mean": m.mean.cpu().numpy()}
    if stochastic:
        assert m.variance is not None and m.mean_entropy is not None
        out |= {"variance": m.variance.cpu().numpy(), "mean_entropy": m.mean_entropy.cpu().numpy()}
    return out
