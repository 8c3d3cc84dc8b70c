"""2D ResNet backbone (TSN), with mmaction2's module names so its checkpoints load strictly.

The arithmetic is torchvision's ResNet (v1.5: the stride sits on the 3x3 conv of a bottleneck),
but every conv+BN(+ReLU) triple is one :class:`ConvBN` module with children ``conv`` and ``bn``,
exactly like mmcv's ``ConvModule``. That is why the state-dict keys read
``backbone.layer1.0.conv1.conv.weight`` / ``backbone.layer1.0.conv1.bn.running_mean`` and the
shortcut is ``layerK.0.downsample.{conv,bn}``: the layout of every mmaction2 checkpoint.

Training-time options follow mmaction2's ``ResNet``:

* ``frozen_stages=k`` freezes the stem and ``layer1..layerk`` (no grads, BN in eval mode);
* ``norm_eval=True`` keeps every BN in eval mode (running stats frozen) while training;
* ``partial_bn=True`` is TSN's partial BN: all BN layers except the first are put in eval mode
  and their affine parameters are frozen (Wang et al., TSN, section 3.2).
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from omnisource.models.layers import ConvBN

__all__ = ["ConvBN", "BasicBlock", "Bottleneck", "ResNet", "ARCH_SETTINGS_2D", "torchvision_to_mmaction_key",
           "imagenet_resnet_state"]


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = "pytorch") -> None:
        super().__init__()
        self.conv1 = ConvBN(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation)
        self.conv2 = ConvBN(planes, planes, 3, stride=1, padding=1, act=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (ResNet-50/101/152).

    ``style='pytorch'`` puts the stride on the 3x3 conv (torchvision, mmaction2's default);
    ``'caffe'`` puts it on the first 1x1 conv (the original MSRA models).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = "pytorch") -> None:
        super().__init__()
        if style not in ("pytorch", "caffe"):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got {style!r}")
        s1, s2 = (1, stride) if style == "pytorch" else (stride, 1)
        self.conv1 = ConvBN(inplanes, planes, 1, stride=s1)
        self.conv2 = ConvBN(planes, planes, 3, stride=s2, padding=dilation, dilation=dilation)
        self.conv3 = ConvBN(planes, planes * self.expansion, 1, act=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.relu(out + identity)


ARCH_SETTINGS_2D: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _make_layer(block: type[nn.Module], inplanes: int, planes: int, blocks: int, stride: int,
                dilation: int, style: str) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = ConvBN(inplanes, planes * block.expansion, 1, stride=stride, act=False)
    layers = [block(inplanes, planes, stride, dilation, downsample, style=style)]
    for _ in range(1, blocks):
        layers.append(block(planes * block.expansion, planes, 1, dilation, style=style))
    return nn.Sequential(*layers)



def freeze_stages(net: nn.Module, frozen_stages: int) -> None:
    """``requires_grad=False`` for the stem (``frozen_stages >= 0``) and ``layer1..layerK``.

    Shared by the 2D and 3D ResNets: mmaction2 uses the same stage numbering for both."""
    if frozen_stages >= 0:
        for p in net.conv1.parameters():
            p.requires_grad = False
    for i in range(1, frozen_stages + 1):
        for p in getattr(net, f"layer{i}").parameters():
            p.requires_grad = False


def eval_frozen_stages(net: nn.Module, frozen_stages: int, norm_eval: bool) -> None:
    """Called from ``train()``: frozen stages (and, with ``norm_eval``, every BatchNorm) stay in
    eval mode, so their running statistics never move."""
    if frozen_stages >= 0:
        net.conv1.eval()
    for i in range(1, frozen_stages + 1):
        getattr(net, f"layer{i}").eval()
    if norm_eval:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

class ResNet(nn.Module):
    """2D ResNet returning the last stage's feature map ``[N, feat_dim, H/32, W/32]``.

    ``base_channels`` (64 in every real model) exists so tests can build tiny networks; the
    zoo's presets keep the standard width so parameter counts equal mmaction2's.
    """

    def __init__(self, depth: int = 50, in_channels: int = 3, base_channels: int = 64,
                 num_stages: int = 4, strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1), style: str = "pytorch",
                 frozen_stages: int = -1, norm_eval: bool = False, partial_bn: bool = False) -> None:
        super().__init__()
        if depth not in ARCH_SETTINGS_2D:
            raise ValueError(f"invalid ResNet depth {depth}; choose from {sorted(ARCH_SETTINGS_2D)}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be in 1..4, got {num_stages}")
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in -1..{num_stages}, got {frozen_stages}")
        self.depth = depth
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.partial_bn = partial_bn
        block, stage_blocks = ARCH_SETTINGS_2D[depth]
        self.conv1 = ConvBN(in_channels, base_channels, 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res_layers: list[str] = []
        inplanes = base_channels
        for i, n in enumerate(stage_blocks[:num_stages]):
            planes = base_channels * 2 ** i
            layer = _make_layer(block, inplanes, planes, n, strides[i], dilations[i], style)
            inplanes = planes * block.expansion
            self.add_module(f"layer{i + 1}", layer)
            self.res_layers.append(f"layer{i + 1}")
        self.feat_dim = inplanes
        self.init_weights()
        self._apply_freezing()

    def init_weights(self) -> None:
        """mmaction2's from-scratch init: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        for name in self.res_layers:
            x = getattr(self, name)(x)
        return x

    # --- training-time behaviour -------------------------------------------------------------
    def _apply_freezing(self) -> None:
        """requires_grad=False for frozen stages; done once, and train() re-applies BN modes."""
        freeze_stages(self, self.frozen_stages)
        if self.partial_bn:
            for bn in self._bns()[1:]:
                bn.weight.requires_grad = False
                bn.bias.requires_grad = False

    def _bns(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        if not mode:
            return self
        eval_frozen_stages(self, self.frozen_stages, self.norm_eval)
        if self.partial_bn:
            for bn in self._bns()[1:]:
                bn.eval()
        return self



# ---------------------------------------------------------------------------------------------
# ImageNet ResNet files (torchvision / timm / mmpretrain names) -> this module's names. The
# ResNet families (TSN, the 3D ResNets, later TSM / TIN / TANet) hand this to the registry as
# their ``pretrained_state`` hook.
# ---------------------------------------------------------------------------------------------
_TV_LAYER = re.compile(r"^(layer\d+\.\d+)\.(conv|bn)(\d+)\.(.+)$")
_TV_DOWN = re.compile(r"^(layer\d+\.\d+)\.downsample\.([01])\.(.+)$")


def torchvision_to_mmaction_key(key: str) -> str | None:
    """Map a torchvision/timm ResNet key to mmaction2's name; ``None`` for the ImageNet fc.

    ``conv1.weight -> conv1.conv.weight``, ``bn1.* -> conv1.bn.*``,
    ``layer1.0.bn2.* -> layer1.0.conv2.bn.*``, ``layer1.0.downsample.1.* -> layer1.0.downsample.bn.*``.
    """
    if key.startswith("fc.") or key.startswith("head."):
        return None
    if key.startswith("conv1."):
        return "conv1.conv." + key[len("conv1."):]
    if key.startswith("bn1."):
        return "conv1.bn." + key[len("bn1."):]
    m = _TV_LAYER.match(key)
    if m:
        block, kind, idx, rest = m.groups()
        return f"{block}.conv{idx}.{'conv' if kind == 'conv' else 'bn'}.{rest}"
    m = _TV_DOWN.match(key)
    if m:
        block, which, rest = m.groups()
        return f"{block}.downsample.{'conv' if which == '0' else 'bn'}.{rest}"
    return key


def looks_like_imagenet_resnet(sd: dict[str, torch.Tensor]) -> bool:
    keys = {k[len("backbone."):] if k.startswith("backbone.") else k for k in sd}
    return "conv1.weight" in keys and "bn1.weight" in keys


def imagenet_resnet_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Backbone tensors of a torchvision / timm / mmpretrain ResNet file in our names, and
    ``'torchvision'``; ``({}, 'unknown')`` for anything else."""
    if not looks_like_imagenet_resnet(sd):
        return {}, "unknown"
    out = {}
    for k, v in sd.items():
        k = k[len("backbone."):] if k.startswith("backbone.") else k
        new = torchvision_to_mmaction_key(k)
        if new is not None:
            out[new] = v
    return out, "torchvision"
