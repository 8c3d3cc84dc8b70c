"""Small building blocks every family shares: conv -> BN -> (ReLU) in mmcv ``ConvModule``'s naming.

Why its own module: the 2D and 3D ResNets, and the families to come (TSM, R(2+1)D, CSN, X3D ...),
all name their convolutions ``<name>.conv`` / ``<name>.bn`` as mmaction2's checkpoints do; one
definition keeps that key layout identical everywhere.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["ConvBN"]


class ConvBN(nn.Module):
    """conv -> BN -> (ReLU), named like mmcv's ``ConvModule`` (children ``conv``, ``bn``).

    ``dims`` selects Conv2d/BatchNorm2d or Conv3d/BatchNorm3d, so the 2D and 3D backbones share
    one module (and one key layout).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, act: bool = True, dims: int = 2) -> None:
        super().__init__()
        conv_cls = nn.Conv2d if dims == 2 else nn.Conv3d
        bn_cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv = conv_cls(in_channels, out_channels, kernel_size, stride=stride,
                             padding=padding, dilation=dilation, bias=False)
        self.bn = bn_cls(out_channels)
        # ReLU has no parameters, so it adds no state-dict keys (as in ConvModule's `activate`).
        self.activate = nn.ReLU(inplace=True) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if self.activate is not None:
            x = self.activate(x)
        return x
