"""R(2+1)D family (Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions"): every
``t x k x k`` convolution of a 3D ResNet factorised into a spatial ``1 x k x k`` convolution, BN,
ReLU and a temporal ``t x 1 x 1`` one, with the middle width chosen so the pair has the
parameters of the full 3D kernel.

Family ``r2plus1d``, input contract ``'3d'``. mmaction2 builds it as ``ResNet3d`` with
``conv_cfg=dict(type='Conv2plus1d')`` (``configs/_base_/models/r2plus1d_r34.py``): the stem, both
convolutions of every BasicBlock and the downsample shortcuts are factorised, all stages
inflated, temporal strides ``(1, 2, 2, 2)``, no ``pool2``, BatchNorm eps 1e-3 around the factorised
convolution (its inner BN keeps the default 1e-5: mmcv builds it without the outer norm config).
Keys equal mmaction2's (``conv1.conv.conv_s.weight``, ``conv1.conv.bn_s.*``, ``conv1.conv.conv_t.weight``,
``conv1.bn.*``), so its checkpoints load strictly. Overrides: those of the 3D ResNet family.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from omnisource.models.heads import I3DHead
from omnisource.models.recognizers import Recognizer3D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet3d import Arch3D, ResNet3d, resnet3d_row

__all__ = ["Conv2plus1d", "R2PLUS1D_ARCH", "FAMILY", "ROWS"]


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(int(x) for x in v)  # type: ignore[return-value]


class Conv2plus1d(nn.Module):
    """``t x k x k`` conv as ``1 x k x k`` conv -> BN -> ReLU -> ``t x 1 x 1`` conv.

    Middle width ``3 * Cin * Cout * k * k / (Cin * k * k + 3 * Cout)`` (truncated), the paper's rule
    for matching a 3x3x3 kernel's parameter count (mmaction2 uses 3 for the temporal size
    whatever the kernel, so do we)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = False) -> None:
        super().__init__()
        k, s, p = _triple(kernel_size), _triple(stride), _triple(padding)
        mid = int(3 * (in_channels * out_channels * k[1] * k[2]) / (in_channels * k[1] * k[2] + 3 * out_channels))
        self.conv_s = nn.Conv3d(in_channels, mid, (1, k[1], k[2]), stride=(1, s[1], s[2]),
                                padding=(0, p[1], p[2]), bias=bias)
        self.bn_s = nn.BatchNorm3d(mid)
        self.relu = nn.ReLU(inplace=True)
        self.conv_t = nn.Conv3d(mid, out_channels, (k[0], 1, 1), stride=(s[0], 1, 1), padding=(p[0], 0, 0),
                                bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_t(self.relu(self.bn_s(self.conv_s(x))))


def _conv2plus1d(cin: int, cout: int, k: Any, stride: Any, padding: Any, dilation: Any, groups: int,
                 bias: bool) -> nn.Module:
    return Conv2plus1d(cin, cout, k, stride, padding, dilation, groups, bias)


# the row of r2plus1d_r34.py: 3x7x7 stem (factorised), no temporal pooling, every block inflated
R2PLUS1D_ARCH = Arch3D(conv1_kernel=(3, 7, 7), inflate=(1, 1, 1, 1), temporal_strides=(1, 2, 2, 2),
                       zero_init_residual=False, notes="mmaction2 ResNet2Plus1d (r2plus1d_r34.py)")


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 34))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    backbone = ResNet3d(depth=depth, arch=R2PLUS1D_ARCH, base_channels=base_channels, in_channels=in_channels,
                        conv_kw={"eps": 1e-3, "conv_layer": _conv2plus1d}, **opts)
    for m in backbone.modules():      # mmcv's Conv2plus1d.init_weights: Kaiming convs, BN 1/0
        if isinstance(m, Conv2plus1d):
            for conv in (m.conv_s, m.conv_t):
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    head = I3DHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout)
    return Recognizer3D(backbone, head, meta)


FAMILY = register_family(Family(
    name="r2plus1d", layout="3d", build=_build,
    overrides=frozenset({"frozen_stages", "norm_eval"}),
    tiny={"base_channels": 8, "depth": 18},
    doc="R(2+1)D: 3D ResNet with factorised (2+1)D convolutions (mmaction2 ResNet2Plus1d + I3DHead)",
))

# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    resnet3d_row("r2plus1d_r34_8x8x1_180e_kinetics400_rgb", "r2plus1d", 8, 8,
                 ("r2plus1d_r34_8xb8-8x8x1-180e_kinetics400-rgb",), depth=34, epochs=180,
                 family="r2plus1d", params=63_759_281,
                 doc="R(2+1)D ResNet-34 8x8, from scratch, Kinetics-400"),
    resnet3d_row("r2plus1d_r34_32x2x1_180e_kinetics400_rgb", "r2plus1d", 32, 2,
                 ("r2plus1d_r34_8xb8-32x2x1-180e_kinetics400-rgb",), depth=34, epochs=180,
                 family="r2plus1d", params=63_759_281,
                 doc="R(2+1)D ResNet-34 32x2, from scratch, Kinetics-400"),
])
