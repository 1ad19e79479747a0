"""Bayesian DRN-D-22 as the paper describes it (section III-A).

Eight levels with 16, 32, 64, 128, 256, 512, 512, 512 kernels (times ``width``): a 7x7 convolution
(padding 3) and a 3x3 convolution in level 1; strided 3x3 convolutions open levels 2-4 (output
stride 8); levels 3-6 hold two residual blocks each; levels 5, 6 and 7 are dilated by 2, 4 and 2;
levels 7 and 8 are single convolutions without residuals (the "D" variant). Every convolution is
followed by batch norm and ReLU; a 1x1 classifier and bilinear upsampling to full resolution follow.

Dropout is where the authors' networks/drn.py puts it, 17 layers in all: after each convolution of levels 1, 2,
7 and 8, after the first convolution inside every residual block, and once at the end of each residual level
(3-6); channel-wise at full width as theirs (see ``layers``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from uqbench_plugins.segmenters.layers import dropout as drop

CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)


Drop = Callable[[], nn.Module]
"""Makes one dropout layer of the network."""


def _conv(cin: int, cout: int, d: Drop, *, stride: int = 1, dilation: int = 1, k: int = 3) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), d())


def _level(cin: int, cout: int, d: Drop, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Two residual blocks, then dropout."""
    return nn.Sequential(_Residual(cin, cout, d, stride=stride, dilation=dilation),
                         _Residual(cout, cout, d, dilation=dilation), d())


class _Residual(nn.Module):
    """conv-bn-relu-dropout, conv-bn, plus the (projected) input, then relu."""

    def __init__(self, cin: int, cout: int, d: Drop, *, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.first = _conv(cin, cout, d, stride=stride, dilation=dilation)
        self.second = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, dilation, dilation, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.second(self.first(x)) + self.skip(x))


class DRND22(nn.Module):
    """[B, in_channels, H, W] -> logits [B, num_classes, H, W]; H and W multiples of 8."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1, *, width: float = 1.0) -> None:
        super().__init__()
        c = [max(4, int(round(n * width))) for n in CHANNELS]
        d = partial(drop, dropout, width)
        self.features = nn.Sequential(
            _conv(in_channels, c[0], d, k=7), _conv(c[0], c[0], d),  # level 1
            _conv(c[0], c[1], d, stride=2),  # level 2
            _level(c[1], c[2], d, stride=2),  # level 3
            _level(c[2], c[3], d, stride=2),  # level 4
            _level(c[3], c[4], d, dilation=2),  # level 5
            _level(c[4], c[5], d, dilation=4),  # level 6
            _conv(c[5], c[6], d, dilation=2),  # level 7
            _conv(c[6], c[7], d),  # level 8
        )
        self.classifier = nn.Conv2d(c[7], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
