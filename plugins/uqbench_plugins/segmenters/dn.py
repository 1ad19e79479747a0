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
"""

from __future__ import annotations

import torch
from torch import nn

from uqbench_plugins.segmenters.layers import dropout as drop

DILATIONS = (1, 1, 2, 4, 8, 16, 32, 1)
RECEPTIVE_FIELD = 1 + 2 * sum(DILATIONS)  # 131
MARGIN = RECEPTIVE_FIELD // 2  # 65


class DilatedCNN(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes, H - 130, W - 130]."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1, *, width: float = 1.0) -> None:
        super().__init__()
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
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
