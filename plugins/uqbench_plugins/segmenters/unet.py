"""Bayesian U-Net as the paper describes it (section III-A).

Four resolution levels and a bottleneck with 64, 128, 256, 512 and 1024 kernels (times ``width``), and
back. Each block is two 3x3 convolutions (padding 1) with LeakyReLU, instance norm after each convolution
of the contracting path only, and dropout (channel-wise at full width, as the authors': see ``layers``) as the
block's last operation, in both paths. 2x2 max pooling
goes down; 2x2 stride-2 transposed convolutions go up and their output is concatenated with the skip
connection of the same level. A 1x1 convolution classifies. Inputs must be multiples of 16.

Every 2-D convolution starts from He-normal weights (sd sqrt(2 / fan_in)) and zero biases, as the authors' U-Net
(``weights_init`` in networks/RecursiveUNet.py of toologicbv/cardiacSegUncertainty); transposed convolutions keep
PyTorch's default, as theirs. The expanding path has no normalisation, and under PyTorch's default initialisation
(sd 1 / sqrt(3 fan_in)) each of its convolutions shrinks the signal: at an eighth of the channels the decoder's
output sd at initialisation is 0.07-0.10 against 0.40-0.45 with He-normal weights.
"""

from __future__ import annotations

import torch
from torch import nn

from uqbench_plugins.segmenters.layers import dropout as drop

CHANNELS = (64, 128, 256, 512, 1024)


def _block(cin: int, cout: int, p: float, *, norm: bool, width: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(nn.Conv2d(a, b, 3, padding=1))
        if norm:
            layers.append(nn.InstanceNorm2d(b, affine=True))
        layers.append(nn.LeakyReLU(0.01, inplace=True))
    layers.append(drop(p, width))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes, H, W]; H and W multiples of 16."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1, *, width: float = 1.0) -> None:
        super().__init__()
        c = [max(4, int(round(n * width))) for n in CHANNELS]
        self.down = nn.ModuleList([_block(in_channels, c[0], dropout, norm=True, width=width)]
                                  + [_block(c[i], c[i + 1], dropout, norm=True, width=width) for i in range(3)])
        self.bottleneck = _block(c[3], c[4], dropout, norm=True, width=width)
        self.up = nn.ModuleList([nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2) for i in reversed(range(4))])
        self.decode = nn.ModuleList([_block(2 * c[i], c[i], dropout, norm=False, width=width)
                                     for i in reversed(range(4))])
        self.pool = nn.MaxPool2d(2)
        self.classifier = nn.Conv2d(c[0], num_classes, 1)
        for m in self.modules():
            if type(m) is nn.Conv2d:  # not ConvTranspose2d (module docstring)
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decode, reversed(skips), strict=True):
            x = block(torch.cat([skip, up(x)], 1))
        return self.classifier(x)
