"""MC-dropout inference: dropout sampling on, batch norm frozen, T passes per slice batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from uqbench.api import Moments, UncertaintyMap


def mc_mode(model: nn.Module) -> nn.Module:
    """Inference mode for everything (batch norm uses its running statistics) except dropout layers."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    return model


class _Accumulator:
    """Running mean, sum of squared deviations (Chan et al.'s pairwise update, stable in float32, unlike
    E[p^2] - E[p]^2) and summed entropy of softmax samples."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.se: torch.Tensor | None = None

    def add(self, p: torch.Tensor) -> None:
        """Add samples [S, B, C, H, W]."""
        k = p.shape[0]
        mean_b = p.mean(0)
        m2_b = ((p - mean_b) ** 2).sum(0) if k > 1 else torch.zeros_like(mean_b)
        ent = -(p * p.clamp_min(1e-12).log()).sum(2).sum(0)
        if self.mean is None or self.m2 is None or self.se is None:
            self.mean, self.m2, self.se, self.n = mean_b, m2_b, ent, k
            return
        n = self.n + k
        delta = mean_b - self.mean
        self.mean += delta * (k / n)
        self.m2 += m2_b + delta * delta * (self.n * k / n)
        self.se += ent
        self.n = n

    def result(self) -> Moments:
        assert self.mean is not None and self.m2 is not None and self.se is not None
        return Moments(self.n, self.mean, self.m2 / self.n, self.se / self.n)


def moments(probs: torch.Tensor) -> Moments:
    """The running statistics of stacked samples [T, B, C, H, W] (what inference accumulates)."""
    acc = _Accumulator()
    for p in probs.float():
        acc.add(p[None])
    return acc.result()


@torch.inference_mode()
def predict_volume(model: nn.Module, image: np.ndarray, umap: UncertaintyMap, samples: int, multiple: int,
                   device: str, seed: int, per_pass: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean softmax [Z, C, Y, X], uncertainty [Z, Y, X]) for a [Z, Y, X] image on the network grid.

    ``samples == 1`` is one deterministic pass (dropout off); more is MC dropout with that many passes,
    ``per_pass`` samples per forward pass (the slices repeated; default: all T on CUDA, where one large
    batch is fastest, one at a time on CPU, where stacking is slower). Maps with ``from_moments`` get running
    sums and the T samples are never held together; other maps get the stacked samples. On CUDA the
    forward passes run under bf16 autocast with channels-last input; the softmax is taken in float32.
    Slices are zero-padded at the bottom and right to a multiple of the network's ``multiple``."""
    h, w = image.shape[1:]
    ph, pw = -h % multiple, -w % multiple
    x = torch.from_numpy(np.pad(image, ((0, 0), (0, ph), (0, pw)))[:, None]).to(device)
    if samples > 1:
        mc_mode(model)
    else:
        model.eval()
    torch.manual_seed(seed)
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    group = per_pass or (samples if x.is_cuda else 1)
    streaming = hasattr(umap, "from_moments")
    acc, stacked = _Accumulator(), []
    done = 0
    while done < samples:
        k = min(group, samples - done)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            logits = model(x.repeat(k, 1, 1, 1))
        out = logits.float().softmax(1)[..., :h, :w]
        p = out.view(k, x.shape[0], *out.shape[1:])
        if streaming:
            acc.add(p)
        else:
            stacked.append(p)
        done += k
    if streaming:
        m = acc.result()
        unc, mean = umap.from_moments(m), m.mean  # type: ignore[attr-defined]
    else:
        probs = torch.cat(stacked)
        unc, mean = umap(probs), probs.mean(0)
    return mean.cpu().numpy(), unc.float().cpu().numpy()
