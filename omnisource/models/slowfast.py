"""SlowFast family (Feichtenhofer et al. 2019): a slow pathway (few frames, wide) and a fast one
(``speed_ratio`` x more frames, ``channel_ratio`` x narrower), joined by time-strided lateral
convolutions from fast to slow after the stem and after each of the first three stages.

Family ``slowfast``, input contract ``'3d'``: one clip ``[N, V, 3, T, H, W]``; the model samples
both pathways itself, as mmaction2's ``ResNet3dSlowFast`` does (nearest-neighbour temporal
resampling: every ``resample_rate``-th frame for the slow pathway, every
``resample_rate // speed_ratio``-th for the fast one). Each pathway is a :class:`ResNet3d` of the
3D ResNet family (slow: SlowOnly's stem and inflation, widened by the lateral channels; fast:
5x7x7 stem, every block inflated, base width 64 / ``channel_ratio``), so the blocks are not
copied here. The lateral convolutions (``slow_path.conv1_lateral``, ``slow_path.layerN_lateral``)
and the head (``SlowFastHead``: pooled fast and slow features concatenated, fast first) keep
mmaction2's names, so its checkpoints load strictly.

Rows (``ARCHS_SLOWFAST``): R50 4x16 (tau 8, alpha 8, fusion kernel 5), R50 8x8 (tau 4, alpha 4,
kernel 7; ``steplr``: lateral convs with BN + ReLU), R101 8x8, R101-R50 4x16 (slow R101, fast
R50). Overrides: ``resample_rate``, ``speed_ratio``, ``channel_ratio``, ``fusion_kernel``,
``lateral_norm``, ``fast_depth``, ``norm_eval`` and the common ones (``base_channels`` is the
slow pathway's width; the fast one is ``base_channels // channel_ratio``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from omnisource.models.heads import I3DHead
from omnisource.models.layers import ConvBN
from omnisource.models.recognizers import Recognizer3D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet3d import Arch3D, ResNet3d, resnet3d_row

__all__ = ["SlowFastArch", "ARCHS_SLOWFAST", "ResNet3dSlowFast", "SlowFastHead", "FAMILY", "ROWS"]


@dataclass(frozen=True)
class SlowFastArch:
    """The numbers that distinguish the zoo's SlowFast rows."""

    resample_rate: int = 8       # tau: the slow pathway sees every tau-th frame
    speed_ratio: int = 8         # alpha: the fast pathway sees alpha x more frames
    channel_ratio: int = 8       # beta_inv: the fast pathway is beta_inv x narrower
    fusion_kernel: int = 5       # temporal kernel of the lateral convolutions
    lateral_norm: bool = False   # lateral convs with BN + ReLU (the step-LR row)
    fast_depth: int | None = None  # None: the slow pathway's depth


ARCHS_SLOWFAST: dict[str, SlowFastArch] = {
    "slowfast_4x16": SlowFastArch(),
    "slowfast_8x8": SlowFastArch(resample_rate=4, speed_ratio=4, fusion_kernel=7),
    "slowfast_8x8_lateral_norm": SlowFastArch(resample_rate=4, speed_ratio=4, fusion_kernel=7, lateral_norm=True),
    "slowfast_r101_r50_4x16": SlowFastArch(fast_depth=50),
}

SLOW = Arch3D(conv1_kernel=(1, 7, 7), inflate=(0, 0, 1, 1), notes="SlowFast slow pathway")
FAST = Arch3D(conv1_kernel=(5, 7, 7), inflate=(1, 1, 1, 1), notes="SlowFast fast pathway")


def _lateral_inplanes(depth: int, base: int, channel_ratio: int, infl: int = 2) -> list[int]:
    """Channels the fast pathway adds to the input of each slow stage (mmaction2's
    ``_calculate_lateral_inplanes``)."""
    expansion = 1 if depth < 50 else 4
    out = []
    for i in range(4):
        if expansion % 2 == 0:
            planes = base * 2 ** i * (expansion // 2) ** (i > 0)
        else:
            planes = base * 2 ** i // 2 ** (i > 0)
        out.append(planes * infl // channel_ratio)
    return out


class ResNet3dSlowFast(nn.Module):
    """Both pathways and the lateral connections; returns ``(slow, fast)`` feature maps."""

    def __init__(self, depth: int = 50, arch: SlowFastArch = SlowFastArch(), in_channels: int = 3,
                 base_channels: int = 64, norm_eval: bool = False, frozen_stages: int = -1) -> None:
        super().__init__()
        self.arch = arch
        a = arch
        fast_depth = a.fast_depth or depth
        lat = _lateral_inplanes(depth, base_channels, a.channel_ratio)
        self.slow_path = ResNet3d(depth=depth, arch=SLOW, in_channels=in_channels, base_channels=base_channels,
                                  norm_eval=norm_eval, frozen_stages=frozen_stages, lateral_inplanes=lat)
        self.fast_path = ResNet3d(depth=fast_depth, arch=FAST, in_channels=in_channels,
                                  base_channels=base_channels // a.channel_ratio, norm_eval=norm_eval,
                                  frozen_stages=frozen_stages)
        k = a.fusion_kernel

        def lateral(cin: int) -> ConvBN:
            return ConvBN(cin, cin * 2, (k, 1, 1), stride=(a.speed_ratio, 1, 1), padding=((k - 1) // 2, 0, 0),
                          dims=3, norm=a.lateral_norm, bias=False, act=a.lateral_norm)

        self.slow_path.conv1_lateral = lateral(base_channels // a.channel_ratio)
        self.lateral_connections = []
        block_expansion = 1 if depth < 50 else 4
        for i in range(3):
            slow_out = base_channels * 2 ** i * block_expansion
            name = f"layer{i + 1}_lateral"
            self.slow_path.add_module(name, lateral(slow_out // a.channel_ratio))
            self.lateral_connections.append(name)
        for name in ["conv1_lateral"] + self.lateral_connections:
            for m in getattr(self.slow_path, name).modules():
                if isinstance(m, nn.Conv3d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.feat_dim = self.slow_path.feat_dim + self.fast_path.feat_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.arch
        # the same resampling call as mmaction2 (nearest, scale 1 / rate): frames 0, tau, 2 tau ...
        x_slow = nn.functional.interpolate(x, mode="nearest", scale_factor=(1.0 / a.resample_rate, 1.0, 1.0))
        x_fast = nn.functional.interpolate(x, mode="nearest",
                                           scale_factor=(1.0 / (a.resample_rate // a.speed_ratio), 1.0, 1.0))
        s, f = self.slow_path, self.fast_path
        x_slow = s.maxpool(s.conv1(x_slow))
        x_fast = f.maxpool(f.conv1(x_fast))
        x_slow = torch.cat((x_slow, s.conv1_lateral(x_fast)), dim=1)
        for i, name in enumerate(s.res_layers):
            x_slow = getattr(s, name)(x_slow)
            x_fast = getattr(f, name)(x_fast)
            if i < len(self.lateral_connections):
                x_slow = torch.cat((x_slow, getattr(s, self.lateral_connections[i])(x_fast)), dim=1)
        return x_slow, x_fast


class SlowFastHead(I3DHead):
    """Average-pool both pathways, concatenate (fast, slow), dropout, fc (mmaction2 SlowFastHead)."""

    def pool(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        x_slow, x_fast = x
        return torch.cat((x_fast.mean(dim=(2, 3, 4)), x_slow.mean(dim=(2, 3, 4))), dim=1)


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    from dataclasses import asdict, replace

    depth = int(opts.pop("depth", preset.depth or 50))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    arch = ARCHS_SLOWFAST[preset.arch]
    fields = {k: opts.pop(k) for k in list(opts) if k in asdict(arch)}
    if fields:
        arch = replace(arch, **fields)
    if arch.resample_rate % arch.speed_ratio:
        raise ValueError(f"resample_rate ({arch.resample_rate}) must be a multiple of speed_ratio ({arch.speed_ratio})")
    backbone = ResNet3dSlowFast(depth, arch, in_channels, base_channels, **opts)
    head = SlowFastHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout,
                slowfast=asdict(arch))
    return Recognizer3D(backbone, head, meta)


def _example(model: nn.Module, n: int) -> torch.Tensor:
    """A clip long enough for both pathways: the slow one needs a frame after resampling."""
    rate = int(model.meta["slowfast"]["resample_rate"])
    return torch.randn(n, 1, int(model.meta.get("in_channels", 3)), 2 * rate, 32, 32)


FAMILY = register_family(Family(
    name="slowfast", layout="3d", build=_build,
    overrides=frozenset({"resample_rate", "speed_ratio", "channel_ratio", "fusion_kernel", "lateral_norm",
                         "fast_depth", "norm_eval", "frozen_stages"}),
    tiny={"base_channels": 16, "depth": 18, "fast_depth": 18},
    example_input=_example,
    doc="SlowFast: slow + fast 3D ResNet pathways with lateral connections (mmaction2 ResNet3dSlowFast "
        "+ SlowFastHead)",
))


def _row(name: str, arch: str, mm: tuple[str, ...], params: int, doc: str, depth: int = 50,
         preset: str = "slowfast_4x16x1") -> ModelPreset:
    # one 32 x 2 clip in; 4 x 16 or 8 x 8 is what the slow pathway sees (the zoo's name)
    return resnet3d_row(name, arch, 32, 2, mm, depth=depth, family="slowfast", params=params, preset=preset,
                        doc=doc)


# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    _row("slowfast_r50_4x16x1_256e_kinetics400_rgb", "slowfast_4x16",
         ("slowfast_r50_8xb8-4x16x1-256e_kinetics400-rgb",), 34_479_288,
         "SlowFast ResNet-50 4x16 (tau 8, alpha 8), cosine schedule, from scratch"),
    _row("slowfast_r50_8x8x1_256e_kinetics400_rgb", "slowfast_8x8",
         ("slowfast_r50_8xb8-8x8x1-256e_kinetics400-rgb",), 34_565_560,
         "SlowFast ResNet-50 8x8 (tau 4, alpha 4), cosine schedule, from scratch", preset="slowfast_8x8x1"),
    _row("slowfast_r50_8x8x1_256e_kinetics400_rgb_steplr", "slowfast_8x8_lateral_norm",
         ("slowfast_r50_8xb8-8x8x1-steplr-256e_kinetics400-rgb",), 34_566_488,
         "SlowFast ResNet-50 8x8, step schedule, lateral convolutions with BN + ReLU", preset="slowfast_8x8x1"),
    _row("slowfast_r101_8x8x1_256e_kinetics400_rgb", "slowfast_8x8",
         ("slowfast_r101_8xb8-8x8x1-256e_kinetics400-rgb",), 62_912_312,
         "SlowFast ResNet-101 8x8 (both pathways R101)", depth=101, preset="slowfast_8x8x1"),
    _row("slowfast_r101_r50_4x16x1_256e_kinetics400_rgb", "slowfast_r101_r50_4x16",
         ("slowfast_r101-r50_32xb8-4x16x1-256e_kinetics400-rgb",), 62_384_312,
         "SlowFast 4x16 with a ResNet-101 slow and a ResNet-50 fast pathway", depth=101),
])
