"""Any segmentation-models-pytorch architecture with any of its encoders (timm ones as ``tu-<name>``), made
Bayesian: dropout after every activation of the decoder and before the segmentation head.

Encoder weights never come from the network: they are random unless the user names a local file holding
an encoder state dict, which must match the encoder exactly.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.ELU, nn.Mish)


def _add_dropout(module: nn.Module, p: float) -> int:
    """Replace every activation under ``module`` by activation -> Dropout(p); returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, ACTIVATIONS):
            setattr(module, name, nn.Sequential(child, nn.Dropout(p)))
            count += 1
        else:
            count += _add_dropout(child, p)
    return count


def build(arch: str, encoder: str, weights: Path | None, *, in_channels: int, num_classes: int,
          dropout: float) -> nn.Module:
    """The smp model with MC dropout in its decoder and before its head, encoder weights from ``weights``."""
    import segmentation_models_pytorch as smp

    model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels,
                             classes=num_classes)
    _add_dropout(model.decoder, dropout)
    model.segmentation_head = nn.Sequential(nn.Dropout(dropout), model.segmentation_head)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.encoder.load_state_dict(state)
    return model
