"""TANet family (Liu et al. 2021, "TAM: Temporal Adaptive Module for Video Recognition"): a 2D
ResNet-50 with a temporal adaptive module after each bottleneck's first 1x1 convolution.

TAM learns, from each channel's per-frame average, (1) a local gate (``L``: a temporal conv
bottleneck ending in a sigmoid) that re-weights every frame of the channel, and (2) a global,
clip-specific temporal kernel (``G``: MLP + softmax over ``adaptive_kernel_size`` taps) that is
convolved over time, channel by channel.

Family ``tanet``, input contract ``'2d'`` (whole groups of ``num_segments`` frames). As mmaction2's
``TANet``: every bottleneck is wrapped as ``TABlock`` (keys ``layerN.M.block.*`` for the
bottleneck, ``layerN.M.tam.{G,L}.*`` for the module), head ``TSMHead`` (segment scores averaged).
Overrides: ``num_segments``, ``tam_alpha``, ``tam_beta``, ``adaptive_kernel_size`` and the 2D
ResNet's; ``pretrained``: an ImageNet ResNet file.
"""
from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omnisource.models.recognizers import Recognizer2D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet import Bottleneck, ResNet, imagenet_resnet_state
from omnisource.models.tsm import TSMHead, segment_group_input

__all__ = ["TAM", "TABlock", "FAMILY", "ROWS"]


class TAM(nn.Module):
    """Temporal adaptive module on ``[N*T, C, H, W]``."""

    def __init__(self, in_channels: int, num_segments: int, alpha: int = 2, adaptive_kernel_size: int = 3,
                 beta: int = 4, conv1d_kernel_size: int = 3) -> None:
        super().__init__()
        self.in_channels, self.num_segments, self.k = in_channels, num_segments, adaptive_kernel_size
        self.G = nn.Sequential(
            nn.Linear(num_segments, num_segments * alpha, bias=False), nn.BatchNorm1d(num_segments * alpha),
            nn.ReLU(inplace=True), nn.Linear(num_segments * alpha, adaptive_kernel_size, bias=False), nn.Softmax(-1))
        self.L = nn.Sequential(
            nn.Conv1d(in_channels, in_channels // beta, conv1d_kernel_size, padding=conv1d_kernel_size // 2, bias=False),
            nn.BatchNorm1d(in_channels // beta), nn.ReLU(inplace=True),
            nn.Conv1d(in_channels // beta, in_channels, 1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        t = self.num_segments
        if n % t:
            raise ValueError(f"TANet needs whole groups of {t} frames, got {n} frames")
        b = n // t
        x = x.view(b, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()     # [B, C, T, H, W]
        desc = x.mean(dim=(3, 4))                                          # [B, C, T]
        kernel = self.G(desc.reshape(-1, t)).view(b * c, 1, -1, 1)          # one temporal kernel per (clip, channel)
        gate = self.L(desc).view(b, c, t, 1, 1)
        y = F.conv2d((x * gate).view(1, b * c, t, h * w), kernel, stride=(1, 1), padding=((self.k - 1) // 2, 0),
                     groups=b * c)
        return y.view(b, c, t, h, w).permute(0, 2, 1, 3, 4).contiguous().view(n, c, h, w)


class TABlock(nn.Module):
    """A bottleneck with TAM between its first and second convolutions."""

    def __init__(self, block: Bottleneck, num_segments: int, **tam: Any) -> None:
        super().__init__()
        if not isinstance(block, Bottleneck):
            raise ValueError("TANet is defined on bottleneck ResNets (depth >= 50)")
        self.block = block
        self.tam = TAM(block.conv1.conv.out_channels, num_segments, **tam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        identity = x if b.downsample is None else b.downsample(x)
        out = b.conv3(b.conv2(self.tam(b.conv1(x))))
        return b.relu(out + identity)


def tanet_pretrained_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """An ImageNet ResNet file in TANet's names (every block under ``.block``)."""
    out, fmt = imagenet_resnet_state(sd)
    return {re.sub(r"^(layer\d+\.\d+)\.", r"\1.block.", k): v for k, v in out.items()}, fmt


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 50))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    segs = int(opts.pop("num_segments", preset.num_clips))
    tam = {"alpha": int(opts.pop("tam_alpha", 2)), "beta": int(opts.pop("tam_beta", 4)),
           "adaptive_kernel_size": int(opts.pop("adaptive_kernel_size", 3))}
    if segs < 3:
        raise ValueError(f"TANet needs at least 3 segments, got {segs}")
    backbone = ResNet(depth=depth, base_channels=base_channels, in_channels=in_channels, **opts)
    for name in backbone.res_layers:
        layer = getattr(backbone, name)
        for i, blk in enumerate(layer):
            layer[i] = TABlock(blk, segs, **tam)
    head = TSMHead(num_classes, backbone.feat_dim, segs, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout,
                num_segments=segs)
    return Recognizer2D(backbone, head, meta)



FAMILY = register_family(Family(
    name="tanet", layout="2d", build=_build,
    overrides=frozenset({"num_segments", "tam_alpha", "tam_beta", "adaptive_kernel_size", "frozen_stages",
                         "norm_eval", "partial_bn"}),
    tiny={"base_channels": 8},
    example_input=segment_group_input,
    pretrained_fresh=(r"\.tam\.",),
    pretrained_state=tanet_pretrained_state, inflate=False,
    doc="TANet: 2D ResNet-50 with temporal adaptive modules (mmaction2 TANet + TSMHead)",
))

# mmaction2's tanet_r50.py normalises with 103.5 (not 103.53) for blue
_MEAN = (123.675, 116.28, 103.5)


def _row(name: str, mm: str, segs: int, dataset: str, classes: int, epochs: int, dropout: float, params: int,
         preset: str, doc: str) -> ModelPreset:
    return ModelPreset(name=name, family="tanet", depth=50, num_classes=classes, dataset=dataset, clip_len=1,
                       frame_interval=1, num_clips=segs, epochs=epochs, train_preset=f"{preset}_train",
                       test_preset=f"{preset}_test", mmaction2_configs=(mm,), imagenet_pretrained=True,
                       dropout=dropout, init_std=0.001, params=params, mean=_MEAN, doc=doc)


# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    _row("tanet_r50_dense_1x1x8_100e_kinetics400_rgb", "tanet_imagenet-pretrained-r50_8xb8-dense-1x1x8-100e_kinetics400-rgb",
         8, "kinetics400", 400, 100, 0.5, 25_590_320, "tanet_dense_1x1x8",
         "TANet ResNet-50, 8 dense segments, Kinetics-400"),
    _row("tanet_r50_1x1x8_50e_sthv1_rgb", "tanet_imagenet-pretrained-r50_8xb8-1x1x8-50e_sthv1-rgb", 8, "sthv1", 174,
         50, 0.5, 25_127_246, "tanet_sthv1_1x1x8", "TANet ResNet-50, 8 segments, Something-Something V1"),
    _row("tanet_r50_1x1x16_50e_sthv1_rgb", "tanet_imagenet-pretrained-r50_8xb6-1x1x16-50e_sthv1-rgb", 16, "sthv1",
         174, 50, 0.6, 25_134_670, "tanet_sthv1_1x1x16", "TANet ResNet-50, 16 segments, Something-Something V1"),
])
