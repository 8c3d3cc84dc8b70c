"""TSN with the zoo's "3rd-party" 2D backbones, written here in their libraries' key layouts.

Families ``tsn_resnext`` and ``tsn_densenet``, input contract ``'2d'`` (as TSN: frames ``[N, S, 3, H, W]``, average
consensus, ``TSNHead``). mmaction2 builds these backbones from other libraries
(``configs/recognition/tsn/custom_backbones``) and keeps those libraries' parameter names under
``backbone.``, so a checkpoint of such a row holds torchvision's or mmpretrain's keys:

* ``tsn_resnext``: ResNeXt-101 32x4d, ``mmcls.ResNeXt`` (mmpretrain) -- the torchvision
  layout (``conv1``, ``bn1``, ``layerN.M.conv{1,2,3}`` / ``bn{1,2,3}``, ``downsample.{0,1}``), 3x3
  convs in 32 groups of 4 x (planes / 64) channels, stride on the 3x3 conv;
* ``tsn_densenet``: DenseNet-161, ``torchvision.densenet161`` -- ``features.conv0`` ...
  ``features.denseblockK.denselayerL.{norm,conv}{1,2}``, ``features.transitionK``,
  ``features.norm5``; mmaction2 calls ``backbone.features`` (so no ReLU after ``norm5``) and
  pools.

Why our own code instead of importing torchvision / mmpretrain: the registry's torchvision is a
CUDA build tied to another torch (it would replace the CPU torch of the default install), and
mmpretrain needs mmcv; each network is a few dozen lines. ImageNet weights of those libraries
(``resnext101_32x4d`` of mmpretrain, ``densenet161`` of torchvision) load through
``pretrained=FILE`` with their own names. Timm backbones (Swin, EfficientNet) are in
:mod:`omnisource.models.tsn_timm` (the ``timm`` extra).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnisource.models.heads import TSNHead
from omnisource.models.recognizers import Recognizer2D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets

__all__ = ["ResNeXt", "DenseNet", "FAMILY_RESNEXT", "FAMILY_DENSENET", "ROWS"]


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, groups: int, width_per_group: int,
                 downsample: nn.Module | None) -> None:
        super().__init__()
        mid = groups * width_per_group * planes // 64
        self.conv1 = nn.Conv2d(inplanes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNeXt(nn.Module):
    """ResNeXt in torchvision's / mmpretrain's key layout; returns the res5 map."""

    ARCH = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

    def __init__(self, depth: int = 101, groups: int = 32, width_per_group: int = 4, base_channels: int = 64,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, base_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = base_channels
        for i, n in enumerate(self.ARCH[depth]):
            planes, stride = base_channels * 2 ** i, 1 if i == 0 else 2
            down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes * 4))
            blocks = [_Bottleneck(inplanes, planes, stride, groups, width_per_group, down)]
            blocks += [_Bottleneck(planes * 4, planes, 1, groups, width_per_group, None) for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes * 4
        self.feat_dim = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, cin: int, growth: int, bn_size: int) -> None:
        super().__init__({f"denselayer{i + 1}": _DenseLayer(cin + i * growth, growth, bn_size) for i in range(n)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # type: ignore[override]
        feats = [x]
        for layer in self.values():
            feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, stride=2))


class DenseNet(nn.Module):
    """torchvision's DenseNet (``features`` only, as mmaction2 uses it): ``[N, C, H/32, W/32]``."""

    ARCH = {121: (32, (6, 12, 24, 16), 64), 161: (48, (6, 12, 36, 24), 96), 169: (32, (6, 12, 32, 32), 64),
            201: (32, (6, 12, 48, 32), 64)}

    def __init__(self, depth: int = 161, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        growth, blocks, init = self.ARCH[depth]
        growth, init = max(1, int(growth * width)), max(1, int(init * width))
        feats = nn.Sequential()
        feats.add_module("conv0", nn.Conv2d(in_channels, init, 7, stride=2, padding=3, bias=False))
        feats.add_module("norm0", nn.BatchNorm2d(init))
        feats.add_module("relu0", nn.ReLU(inplace=True))
        feats.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))
        c = init
        for i, n in enumerate(blocks):
            feats.add_module(f"denseblock{i + 1}", _DenseBlock(n, c, growth, 4))
            c += n * growth
            if i != len(blocks) - 1:
                feats.add_module(f"transition{i + 1}", _Transition(c, c // 2))
                c //= 2
        feats.add_module("norm5", nn.BatchNorm2d(c))
        self.features = feats
        self.feat_dim = c
        for m in self.modules():     # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _tsn(backbone: nn.Module, preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any],
         depth: int, in_channels: int) -> nn.Module:
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    if opts:
        raise ValueError(f"options {sorted(opts)} do not apply to the {preset.family} backbone")
    head = TSNHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, in_channels=in_channels, dropout=dropout)
    return Recognizer2D(backbone, head, meta)


def _build_resnext(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth, cin = int(opts.pop("depth", preset.depth or 101)), int(opts.pop("in_channels", 3))
    backbone = ResNeXt(depth, int(opts.pop("groups", 32)), int(opts.pop("width_per_group", 4)),
                       int(opts.pop("base_channels", 64)), cin)
    return _tsn(backbone, preset, num_classes, opts, meta, depth, cin)


def _build_densenet(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth, cin = int(opts.pop("depth", preset.depth or 161)), int(opts.pop("in_channels", 3))
    width = float(opts.pop("base_channels", 96)) / 96          # tiny test networks: narrower
    return _tsn(DenseNet(depth, cin, width), preset, num_classes, opts, meta, depth, cin)


def _pretrained_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """An ImageNet file of torchvision / mmpretrain (``state_dict`` already unwrapped): its own
    names, without a ``backbone.`` prefix and without the classifier."""
    out = {}
    for k, v in sd.items():
        k = k[len("backbone."):] if k.startswith("backbone.") else k
        if k.startswith(("fc.", "classifier.", "head.")):
            continue
        out[k] = v
    return out, "torchvision/mmpretrain"


FAMILY_RESNEXT = register_family(Family(
    name="tsn_resnext", layout="2d", build=_build_resnext,
    overrides=frozenset({"groups", "width_per_group"}),
    tiny={"base_channels": 16, "groups": 4},
    pretrained_state=_pretrained_state, inflate=False,
    doc="TSN with a ResNeXt backbone in mmpretrain's / torchvision's key layout (ResNeXt-101 32x4d)",
))
FAMILY_DENSENET = register_family(Family(
    name="tsn_densenet", layout="2d", build=_build_densenet,
    overrides=frozenset(),
    tiny={"base_channels": 8},
    pretrained_state=_pretrained_state, inflate=False,
    doc="TSN with a DenseNet backbone in torchvision's key layout (DenseNet-161)",
))


def _row(name: str, mm: tuple[str, ...], family: str, depth: int, params: int, preset: str, doc: str) -> ModelPreset:
    return ModelPreset(name=name, family=family, depth=depth, num_classes=400, dataset="kinetics400",
                       clip_len=1, frame_interval=1, num_clips=3, epochs=100, train_preset=f"{preset}_train",
                       test_preset=f"{preset}_test", mmaction2_configs=mm, imagenet_pretrained=True, dropout=0.4,
                       init_std=0.01, params=params, doc=doc)


# parameter counts: mmaction2 1.2.0's MODELS.build(cfg.model): ResNeXt in the reference venv with mmpretrain
# added, DenseNet-161 in a venv with torchvision 0.29 (torch 2.14); scores equal ours exactly on both
ROWS = register_presets([
    _row("tsn_rn101_32x4d_320p_1x1x3_100e_kinetics400_rgb",
         ("tsn_imagenet-pretrained-rn101-32x4d_8xb32-1x1x3-100e_kinetics400-rgb",), "tsn_resnext", 101, 42_948_304,
         "tsn_1x1x3", "TSN ResNeXt-101 32x4d (mmpretrain weights), 3 segments, Kinetics-400"),
    _row("tsn_dense161_320p_1x1x3_100e_kinetics400_rgb",
         ("tsn_imagenet-pretrained-dense161_8xb32-1x1x3-100e_kinetics400-rgb",), "tsn_densenet", 161, 27_355_600,
         "tsn_rrc_1x1x3", "TSN DenseNet-161 (torchvision weights), 3 segments, RandomResizedCrop, Kinetics-400"),
])
