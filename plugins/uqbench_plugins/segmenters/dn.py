"""Bayesian dilated CNN (DN) as the paper describes it (section III-A; Wolterink et al. 2017).

Ten layers: layers 1-8 are unpadded 3x3 convolutions with 32 kernels (times ``width``) and dilations 1, 1,
2, 4, 8, 16, 32, 1, which gives a receptive field of 131 x 131 voxels; layers 9 and 10 are 1x1
convolutions, 128 kernels and then one per class. Batch norm in layers 2-9, ReLU after every layer but
the last, dropout (channel-wise at full width, as the authors' networks/dilatedcnn.py: see ``layers``) as the
last operation of every layer but the last.

Being unpadded, the network shrinks its input by 130 voxels: its output is the input less ``MARGIN`` = 65
voxels on each side, and every output voxel sees exactly its 131 x 131 neighbourhood. The segmenter declares
that margin as its ``context``, so the harness gives it real image around each training patch (151 x 151
samples read from 281 x 281 of image, the paper's "padded to 281 x 281") and around each slice it predicts,
zeros only beyond the image's edge.

``plan="authors"`` builds the net as the authors' networks/dilatedcnn.py does instead of as the paper's text
says: 32 kernels in layers 1-6, 64 in layer 7 and 128 in layer 8; ELU in layers 1, 2, 8 and 9, ReLU between;
each activation before its batch norm; He-normal weights and zero biases. Same receptive field, 2.2x the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from uqbench_plugins.segmenters import check_dn_plan
from uqbench_plugins.segmenters.layers import dropout as drop

DILATIONS = (1, 1, 2, 4, 8, 16, 32, 1)
RECEPTIVE_FIELD = 1 + 2 * sum(DILATIONS)  # 131
MARGIN = RECEPTIVE_FIELD // 2  # 65
AUTHORS_CHANNELS = (32, 32, 32, 32, 32, 32, 64, 128)  # layers 1-8 of networks/dilatedcnn.py; layer 9 has 128
AUTHORS_ELU = {0, 1, 7, 8}  # layers (from 0) whose activation is ELU there; ReLU in the others


class DilatedCNN(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes, H - 130, W - 130]."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1, *, width: float = 1.0,
                 plan: str = "paper") -> None:
        super().__init__()
        check_dn_plan(plan)
        self.layers = (_paper if plan == "paper" else _authors)(in_channels, num_classes, dropout, width=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _paper(in_channels: int, num_classes: int, dropout: float, *, width: float) -> nn.Sequential:
    """Section III-A's net: 32 kernels in every dilated layer, batch norm before each ReLU."""
    ch, hidden = max(4, int(round(32 * width))), max(8, int(round(128 * width)))
    layers: list[nn.Module] = []
    cin = in_channels
    for i, d in enumerate(DILATIONS):
        layers.append(nn.Conv2d(cin, ch, 3, dilation=d, bias=i == 0))
        if i > 0:
            layers.append(nn.BatchNorm2d(ch))
        layers += [nn.ReLU(inplace=True), drop(dropout, width)]
        cin = ch
    layers += [nn.Conv2d(ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
               drop(dropout, width), nn.Conv2d(hidden, num_classes, 1)]
    return nn.Sequential(*layers)


def _authors(in_channels: int, num_classes: int, dropout: float, *, width: float) -> nn.Sequential:
    """networks/dilatedcnn.py's net (module docstring): wider last layers, activation before batch norm."""
    widths = [max(4, int(round(n * width))) for n in (*AUTHORS_CHANNELS, 128)]
    layers: list[nn.Module] = []
    cin = in_channels
    for i, (cout, d) in enumerate(zip(widths, (*DILATIONS, 1), strict=True)):
        layers += [nn.Conv2d(cin, cout, 3 if i < len(DILATIONS) else 1, dilation=d),
                   nn.ELU(inplace=True) if i in AUTHORS_ELU else nn.ReLU(inplace=True)]
        if i > 0:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(drop(dropout, width))
        cin = cout
    layers.append(nn.Conv2d(cin, num_classes, 1))
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)
