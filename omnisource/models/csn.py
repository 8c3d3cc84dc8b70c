"""CSN family (Tran et al. 2019, "Video Classification with Channel-Separated Convolutional
Networks"): a 3D ResNet bottleneck whose 3x3x3 convolution is depthwise (one filter per channel).

Family ``csn``, input contract ``'3d'``. Two block kinds, as in mmaction2's ``ResNet3dCSN``
(``configs/_base_/models/ircsn_r152.py``):

* ``ir`` (interaction-reduced): ``conv2`` is a depthwise 3x3x3 conv (+BN+ReLU);
* ``ip`` (interaction-preserved): a 1x1x1 conv (+BN) before that depthwise conv.

``conv2`` is a ``Sequential`` so the keys are mmaction2's (``conv2.0.conv.weight`` ... for ``ir``,
``conv2.0`` = the 1x1x1 and ``conv2.1`` = the depthwise conv for ``ip``). Every stage inflated in
the 3x3x3 style (conv1 1x1x1), a 3x7x7 stem, temporal strides (1, 2, 2, 2), no pool2, BatchNorm
eps 1e-3. The IG65M / Sports-1M fine-tuning rows are ``bnfrozen`` (norm_eval + frozen BN
affine parameters), and so -- as mmaction2 1.2.0 builds them, since they inherit that config --
are the two from-scratch R152 rows. Overrides: ``bottleneck_mode``, ``bn_frozen``, ``norm_eval``,
``frozen_stages`` and the common ones.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from omnisource.models.heads import I3DHead
from omnisource.models.layers import ConvBN
from omnisource.models.recognizers import Recognizer3D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet3d import Arch3D, Bottleneck3d, ResNet3d, resnet3d_row

__all__ = ["CSNBottleneck3d", "CSN_ARCH", "FAMILY", "ROWS"]


class CSNBottleneck3d(Bottleneck3d):
    """Bottleneck with a channel-separated (depthwise) middle convolution."""

    mode = "ir"

    def make_conv2(self, planes: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                   padding: tuple[int, int, int], dilation: tuple[int, int, int], ckw: dict[str, Any]) -> nn.Module:
        layers: list[nn.Module] = []
        if self.mode == "ip":
            layers.append(ConvBN(planes, planes, 1, act=False, dims=3, **ckw))
        layers.append(ConvBN(planes, planes, kernel, stride=stride, padding=padding, dilation=dilation,
                             groups=planes, dims=3, **ckw))
        return nn.Sequential(*layers)


class _IPBottleneck(CSNBottleneck3d):
    mode = "ip"


CSN_ARCH = Arch3D(conv1_kernel=(3, 7, 7), inflate=(1, 1, 1, 1), inflate_style="3x3x3",
                  temporal_strides=(1, 2, 2, 2), zero_init_residual=False, notes="mmaction2 ResNet3dCSN")


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 152))
    if depth not in (50, 101, 152):
        raise ValueError(f"CSN depth must be 50, 101 or 152, got {depth}")
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    mode = str(opts.pop("bottleneck_mode", preset.arch or "ir"))
    if mode not in ("ir", "ip"):
        raise ValueError(f"bottleneck_mode must be 'ir' or 'ip', got {mode!r}")
    block = CSNBottleneck3d if mode == "ir" else _IPBottleneck
    backbone = ResNet3d(depth=depth, arch=CSN_ARCH, base_channels=base_channels, in_channels=in_channels,
                        block=block, conv_kw={"eps": 1e-3}, **opts)
    head = I3DHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout,
                bottleneck_mode=mode)
    return Recognizer3D(backbone, head, meta)


FAMILY = register_family(Family(
    name="csn", layout="3d", build=_build,
    overrides=frozenset({"bottleneck_mode", "bn_frozen", "norm_eval", "frozen_stages"}),
    tiny={"base_channels": 8, "depth": 50},
    doc="CSN: channel-separated 3D ResNets, ir / ip bottlenecks (mmaction2 ResNet3dCSN + I3DHead)",
))

# the mean/std of the from-scratch and Sports-1M rows (mmaction2's data_preprocessor there)
_CSN_MEAN, _CSN_STD = (110.2008, 100.63983, 95.99475), (58.14765, 56.46975, 55.332195)


def _row(name: str, mm: str | None, mode: str, depth: int, params: int, init: str, doc: str,
         kinetics_mean: bool, epochs: int = 58) -> ModelPreset:
    frozen = {"norm_eval": True, "bn_frozen": True}
    return resnet3d_row(name, mode, 32, 2, (mm,) if mm else (), depth=depth, epochs=epochs, family="csn",
                        params=params,
                        preset="csn_k400norm_32x2x1" if kinetics_mean else "csn_32x2x1", model=frozen, doc=f"{doc} ({init})",
                        mean=_CSN_MEAN if kinetics_mean else None, std=_CSN_STD if kinetics_mean else None)


# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    _row("ircsn_ig65m_pretrained_bnfrozen_r152_32x2x1_58e_kinetics400_rgb",
         "ircsn_ig65m-pretrained-r152-bnfrozen_8xb12-32x2x1-58e_kinetics400-rgb", "ir", 152, 29_703_568,
         "IG65M-initialised, BN frozen", "ir-CSN ResNet-152 32x2", False),
    _row("ircsn_ig65m_pretrained_r152_32x2x1_58e_kinetics400_rgb",
         "ircsn_ig65m-pretrained-r152_8xb12-32x2x1-58e_kinetics400-rgb", "ir", 152, 29_703_568,
         "IG65M-initialised", "ir-CSN ResNet-152 32x2", False),
    _row("ircsn_ig65m_pretrained_bnfrozen_r50_32x2x1_58e_kinetics400_rgb",
         "ircsn_ig65m-pretrained-r50-bnfrozen_8xb12-32x2x1-58e_kinetics400-rgb", "ir", 50, 13_131_152,
         "IG65M-initialised, BN frozen", "ir-CSN ResNet-50 32x2", False),
    _row("ircsn_sports1m_pretrained_bnfrozen_r152_32x2x1_58e_kinetics400_rgb",
         "ircsn_sports1m-pretrained-r152-bnfrozen_32x2x1-58e_kinetics400-rgb", "ir", 152, 29_703_568,
         "Sports-1M-initialised, BN frozen", "ir-CSN ResNet-152 32x2", True),
    _row("ircsn_bnfrozen_r152_32x2x1_180e_kinetics400_rgb", "ircsn_r152_32x2x1-180e_kinetics400-rgb", "ir", 152,
         29_703_568, "from scratch", "ir-CSN ResNet-152 32x2", True, epochs=180),
    # a 0.x row without a 1.x config: the network of the R50 IG65M row (its parameter count is that
    # config's), the normalisation of the other from-scratch rows
    _row("ircsn_bnfrozen_r50_32x2x1_180e_kinetics400_rgb", None, "ir", 50, 13_131_152, "from scratch",
         "ir-CSN ResNet-50 32x2", True, epochs=180),
    _row("ipcsn_ig65m_pretrained_bnfrozen_r152_32x2x1_58e_kinetics400_rgb",
         "ipcsn_ig65m-pretrained-r152-bnfrozen_32x2x1-58e_kinetics400-rgb", "ip", 152, 33_016_592,
         "IG65M-initialised, BN frozen", "ip-CSN ResNet-152 32x2", False),
    _row("ipcsn_sports1m_pretrained_bnfrozen_r152_32x2x1_58e_kinetics400_rgb",
         "ipcsn_sports1m-pretrained-r152-bnfrozen_32x2x1-58e_kinetics400-rgb", "ip", 152, 33_016_592,
         "Sports-1M-initialised, BN frozen", "ip-CSN ResNet-152 32x2", True),
    _row("ipcsn_bnfrozen_r152_32x2x1_180e_kinetics400_rgb", "ipcsn_r152_32x2x1-180e_kinetics400-rgb", "ip", 152,
         33_016_592, "from scratch", "ip-CSN ResNet-152 32x2", True, epochs=180),
])
