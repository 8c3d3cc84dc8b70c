"""X3D family (Feichtenhofer 2020, "X3D: Expanding Architectures for Efficient Video
Recognition"): a narrow ResNet of depthwise 3x3x3 bottlenecks, expanded along width (gamma_w),
bottleneck width (gamma_b) and depth (gamma_d), with squeeze-excitation on every other block and
Swish inside each block.

Family ``x3d``, input contract ``'3d'``. The rows are mmaction2's facebook-converted X3D-S
(13x6 clips, 160-182 px) and X3D-M (16x5, 224-256 px); both are the same network
(gamma_w 1, gamma_b 2.25, gamma_d 2.2: stages of 3 / 5 / 11 / 7 blocks, 24 -> 192 channels, a
432-wide conv5), differing in input only. Keys equal mmaction2's ``X3D`` + ``X3DHead``
(``conv1_s``, ``conv1_t``, ``layer*.N.{conv1,conv2,conv3,se_module,downsample}``, ``conv5``,
``cls_head.fc1`` (no bias) / ``cls_head.fc2``). Normalisation: mean 114.75, std 57.38 (facebook's).
Overrides: ``gamma_w``, ``gamma_b``, ``gamma_d``, ``se_ratio``, ``se_style``, ``use_swish``,
``frozen_stages``, ``norm_eval`` and the common ones (``base_channels`` replaces the 24 stem width).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from omnisource.models.layers import ConvBN, Swish
from omnisource.models.recognizers import Recognizer3D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet import eval_frozen_stages

__all__ = ["SEModule", "BlockX3D", "X3D", "X3DHead", "FAMILY", "ROWS"]


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """Width times ``multiplier`` rounded to a multiple of ``divisor`` (never more than 10% down),
    X3D's channel rule."""
    if not multiplier:
        return int(width)
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


class SEModule(nn.Module):
    """Squeeze-excitation: global average -> 1x1x1 conv -> ReLU -> 1x1x1 conv -> sigmoid gate."""

    def __init__(self, channels: int, reduction: float) -> None:
        super().__init__()
        self.bottleneck = round_width(channels, reduction)
        self.fc1 = nn.Conv3d(channels, self.bottleneck, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv3d(self.bottleneck, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.relu(self.fc1(w))))


class BlockX3D(nn.Module):
    """1x1x1 (ReLU) -> depthwise 3x3x3 -> [SE] -> Swish -> 1x1x1, residual, ReLU."""

    def __init__(self, inplanes: int, planes: int, outplanes: int, spatial_stride: int = 1,
                 downsample: nn.Module | None = None, se_ratio: float | None = None, use_swish: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvBN(inplanes, planes, 1, dims=3)
        self.conv2 = ConvBN(planes, planes, 3, stride=(1, spatial_stride, spatial_stride), padding=1,
                            groups=planes, act=False, dims=3)
        self.swish = Swish() if use_swish else nn.Identity()
        self.conv3 = ConvBN(planes, outplanes, 1, act=False, dims=3)
        self.se_module = SEModule(planes, se_ratio) if se_ratio is not None else None
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.se_module is not None:
            out = self.se_module(out)
        out = self.conv3(self.swish(out))
        return self.relu(out + identity)


class X3D(nn.Module):
    """The X3D backbone: ``[N, 3, T, H, W]`` -> ``[N, feat_dim, T, H/32, W/32]``."""

    def __init__(self, gamma_w: float = 1.0, gamma_b: float = 2.25, gamma_d: float = 2.2, in_channels: int = 3,
                 base_channels: int = 24, se_ratio: float | None = 1 / 16, se_style: str = "half",
                 use_swish: bool = True, frozen_stages: int = -1, norm_eval: bool = False,
                 zero_init_residual: bool = True) -> None:
        super().__init__()
        if se_style not in ("all", "half"):
            raise ValueError(f"se_style must be 'all' or 'half', got {se_style!r}")
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        base = round_width(base_channels, gamma_w)
        stage_blocks = [int(math.ceil(gamma_d * b)) if gamma_d else b for b in (1, 2, 5, 3)]
        self.conv1_s = ConvBN(in_channels, base, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), dims=3,
                              norm=False, bias=False, act=False)
        self.conv1_t = ConvBN(base, base, (5, 1, 1), padding=(2, 0, 0), groups=base, dims=3)
        self.res_layers = []
        layer_in = base
        for i, n in enumerate(stage_blocks):
            width = base * 2 ** i
            planes = int(width * gamma_b)
            downsample = ConvBN(layer_in, width, 1, stride=(1, 2, 2), act=False, dims=3)
            blocks = []
            for j in range(n):
                use_se = se_style == "all" or j % 2 == 0
                blocks.append(BlockX3D(layer_in if j == 0 else width, planes, width, 2 if j == 0 else 1,
                                       downsample if j == 0 else None, se_ratio if use_se else None, use_swish))
            layer_in = width
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.res_layers.append(f"layer{i + 1}")
        self.conv5 = ConvBN(layer_in, int(layer_in * gamma_b), 1, dims=3)
        self.feat_dim = int(layer_in * gamma_b)
        self.zero_init_residual = zero_init_residual
        self.init_weights()
        self.train()

    def init_weights(self) -> None:
        """mmaction2's from-scratch init: Kaiming convs, BN 1/0, each block's last BN 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, BlockX3D):
                    nn.init.zeros_(m.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1_t(self.conv1_s(x))
        for name in self.res_layers:
            x = getattr(self, name)(x)
        return self.conv5(x)

    def train(self, mode: bool = True) -> "X3D":
        super().train(mode)
        if not mode:
            return self
        if self.frozen_stages >= 0:
            self.conv1_s.eval()
            self.conv1_t.eval()
        for i in range(1, self.frozen_stages + 1):
            getattr(self, f"layer{i}").eval()
        if self.norm_eval:
            eval_frozen_stages(self, -1, True)
        return self


class X3DHead(nn.Module):
    """Average pool -> fc1 (2048, no bias) -> ReLU -> dropout -> fc2 (mmaction2 X3DHead)."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float = 0.5, init_std: float = 0.01,
                 mid_channels: int = 2048, fc1_bias: bool = False) -> None:
        super().__init__()
        self.num_classes, self.in_channels = num_classes, in_channels
        self.fc1 = nn.Linear(in_channels, mid_channels, bias=fc1_bias)
        self.fc2 = nn.Linear(mid_channels, num_classes)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.init_std = init_std
        self.init_weights()

    def init_weights(self) -> None:
        """N(0, init_std) weights, zero biases (mmaction2's X3DHead.init_weights)."""
        for fc in (self.fc1, self.fc2):
            nn.init.normal_(fc.weight, std=self.init_std)
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.pool(x)))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc2(x)


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 24))
    in_channels = int(opts.pop("in_channels", 3))
    opts.pop("depth", None)
    backbone = X3D(in_channels=in_channels, base_channels=base_channels, **opts)
    head = X3DHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(base_channels=base_channels, in_channels=in_channels, dropout=dropout)
    return Recognizer3D(backbone, head, meta)  # type: ignore[arg-type]


FAMILY = register_family(Family(
    name="x3d", layout="3d", build=_build,
    overrides=frozenset({"gamma_w", "gamma_b", "gamma_d", "se_ratio", "se_style", "use_swish",
                         "frozen_stages", "norm_eval", "zero_init_residual"}),
    tiny={"base_channels": 8, "gamma_d": 1.0, "gamma_b": 1.0},
    doc="X3D: expanded depthwise 3D ResNets with SE and Swish (mmaction2 X3D + X3DHead)",
))

_FB_MEAN, _FB_STD = (114.75, 114.75, 114.75), (57.38, 57.38, 57.38)

# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    ModelPreset(name="x3d_s_13x6x1_facebook_kinetics400_rgb", family="x3d", num_classes=400, dataset="kinetics400",
                clip_len=13, frame_interval=6, num_clips=1, epochs=0, train_preset="x3d_s_13x6x1_train",
                test_preset="x3d_s_13x6x1_test", mmaction2_configs=("x3d_s_13x6x1_facebook-kinetics400-rgb",),
                arch="x3d_s", input_size=160, mean=_FB_MEAN, std=_FB_STD, params=3_794_322,
                doc="X3D-S 13x6 at 160-182 px, converted from facebook's SlowFast repo (test only: epochs 0)"),
    ModelPreset(name="x3d_m_16x5x1_facebook_kinetics400_rgb", family="x3d", num_classes=400, dataset="kinetics400",
                clip_len=16, frame_interval=5, num_clips=1, epochs=0, train_preset="x3d_m_16x5x1_train",
                test_preset="x3d_m_16x5x1_test", mmaction2_configs=("x3d_m_16x5x1_facebook-kinetics400-rgb",),
                arch="x3d_m", input_size=224, mean=_FB_MEAN, std=_FB_STD, params=3_794_322,
                doc="X3D-M 16x5 at 224-256 px, converted from facebook's SlowFast repo (test only: epochs 0)"),
])
