"""MC-dropout inference: dropout sampling on, batch norm frozen, T passes per slice batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from uqbench.api import UncertaintyMap


def mc_mode(model: nn.Module) -> nn.Module:
    """Inference mode for everything (batch norm uses its running statistics) except dropout layers."""
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    return model


@torch.inference_mode()
def predict_volume(model: nn.Module, image: np.ndarray, umap: UncertaintyMap, samples: int, multiple: int,
                   device: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean softmax [Z, C, Y, X], uncertainty [Z, Y, X]) for a [Z, Y, X] image on the network grid.

    ``samples == 1`` is one deterministic pass (dropout off); more is MC dropout with that many passes.
    Slices are zero-padded at the bottom and right to a multiple of the network's ``multiple``."""
    h, w = image.shape[1:]
    ph, pw = -h % multiple, -w % multiple
    x = torch.from_numpy(np.pad(image, ((0, 0), (0, ph), (0, pw)))[:, None]).to(device)
    if samples > 1:
        mc_mode(model)
    else:
        model.eval()
    torch.manual_seed(seed)
    probs = torch.stack([model(x).float().softmax(1) for _ in range(samples)])[..., :h, :w]
    unc = umap(probs)
    return probs.mean(0).cpu().numpy(), unc.float().cpu().numpy()
