"""Small building blocks every family shares: conv -> BN -> (ReLU) in mmcv ``ConvModule``'s naming.

Why its own module: the 2D and 3D ResNets, and the families to come (TSM, R(2+1)D, CSN, X3D ...),
all name their convolutions ``<name>.conv`` / ``<name>.bn`` as mmaction2's checkpoints do; one
definition keeps that key layout identical everywhere.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["ConvBN", "Swish"]


class ConvBN(nn.Module):
    """conv -> BN -> (activation), named like mmcv's ``ConvModule`` (children ``conv``, ``bn``).

    ``dims`` selects Conv2d/BatchNorm2d or Conv3d/BatchNorm3d, so the 2D and 3D backbones share
    one module (and one key layout). ``norm=False`` drops the BN (the conv then has a bias unless
    ``bias=False``, ConvModule's ``bias='auto'``); ``act`` is ``True``/``'relu'``, ``'relu6'``, ``'swish'``
    or ``False``; ``conv_layer`` builds another convolution in the ``conv`` slot (R(2+1)D's
    factorised one) from ``(in, out, kernel, stride, padding, dilation, groups, bias)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, act: bool | str = True, dims: int = 2, *,
                 groups: int = 1, eps: float = 1e-5, norm: bool = True, bias: bool | None = None,
                 conv_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        conv_cls = nn.Conv2d if dims == 2 else nn.Conv3d
        bn_cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        use_bias = (not norm) if bias is None else bias
        if conv_layer is None:
            self.conv = conv_cls(in_channels, out_channels, kernel_size, stride=stride,
                                 padding=padding, dilation=dilation, groups=groups, bias=use_bias)
        else:
            self.conv = conv_layer(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, use_bias)
        if norm:
            self.bn = bn_cls(out_channels, eps=eps)
        else:
            self.bn = None
        # activations have no parameters, so they add no state-dict keys (ConvModule's `activate`)
        if act is True or act == "relu":
            self.activate: nn.Module | None = nn.ReLU(inplace=True)
        elif act == "swish":
            self.activate = Swish()
        elif act == "relu6":
            self.activate = nn.ReLU6(inplace=True)
        elif act is False or act is None:
            self.activate = None
        else:
            raise ValueError(f"unknown activation {act!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


class Swish(nn.Module):
    """x * sigmoid(x) (mmcv's Swish; X3D). torch's SiLU computes the same in one kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(x)
