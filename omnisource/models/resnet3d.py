"""3D ResNet family (SlowOnly, I3D, C2D) built from one table of per-stage settings.

Family ``resnet3d``, input contract ``'3d'``: clips ``[N, V, 3, T, H, W]`` (or ``[N, 3, T, H, W]``).
This file holds its blocks, the table of variants (:data:`ARCHS_3D`), the family registration
and the zoo rows (:data:`ROWS`). Overrides: ``depth``, ``base_channels``, ``in_channels``,
``dropout``, ``init_std``, ``frozen_stages``, ``norm_eval``, any field of :class:`Arch3D`
(``inflate``, ``conv1_kernel``, ``with_pool2`` ...) and ``pretrained`` (ImageNet ResNet files
are inflated: 2D kernels repeated over time and divided by the temporal size).


The variants of the family differ only in a handful of numbers: the stem kernel and temporal
strides, whether a temporal max-pool follows ``layer1`` (``with_pool2``) and which blocks get a
temporal kernel ("inflation"). :data:`ARCHS_3D` lists those numbers, one row per variant, so
adding a variant is adding a row, not copying a class. The rows reproduce mmaction2's
``ResNet3dSlowOnly`` (``configs/_base_/models/slowonly_r50.py``), ``ResNet3d`` as configured
for I3D (``i3d_r50.py``) and ``C2D`` (``c2d_r50.py``); module names and parameter shapes equal
mmaction2's, so its checkpoints load strictly (:mod:`omnisource.models.checkpoint` also
accepts C2D's 2D kernels for our ``1xkxk`` kernels, which compute the same thing).

Inflated bottleneck (``inflate_style='3x1x1'``, SlowOnly/I3D): ``conv1`` is ``3x1x1``, ``conv2``
``1x3x3``; ``'3x3x3'`` puts the temporal extent on ``conv2`` instead. Non-inflated blocks are
the 2D bottleneck with ``1x`` kernels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Sequence

import torch
from torch import nn

from omnisource.models.heads import I3DHead
from omnisource.models.nonlocal_block import NonLocal3d
from omnisource.models.recognizers import Recognizer3D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.layers import ConvBN
from omnisource.models.resnet import eval_frozen_stages, freeze_stages, imagenet_resnet_state

__all__ = ["Arch3D", "ARCHS_3D", "BasicBlock3d", "Bottleneck3d", "ResNet3d", "ARCH_SETTINGS_3D", "FAMILY",
           "ROWS", "resnet3d_row"]

Inflate = int | Sequence[int]


@dataclass(frozen=True)
class Arch3D:
    """One row of the 3D family: everything that distinguishes SlowOnly from I3D from C2D.

    ``inflate`` has one entry per stage: 0/1 for the whole stage, or a per-block tuple (I3D).
    """

    conv1_kernel: tuple[int, int, int] = (1, 7, 7)
    conv1_stride_t: int = 1
    pool1_stride_t: int = 1
    pool1_padding: tuple[int, int, int] = (0, 1, 1)
    with_pool1: bool = True
    with_pool2: bool = False
    inflate: tuple[Inflate, ...] = (0, 0, 1, 1)
    inflate_style: str = "3x1x1"
    spatial_strides: tuple[int, ...] = (1, 2, 2, 2)
    temporal_strides: tuple[int, ...] = (1, 1, 1, 1)
    zero_init_residual: bool = True
    # non-local blocks after residual blocks (per stage 0/1 or per-block tuple, like `inflate`)
    non_local: tuple[Inflate, ...] = (0, 0, 0, 0)
    non_local_mode: str = "embedded_gaussian"
    non_local_use_scale: bool = True
    non_local_sub_sample: bool = True
    notes: str = field(default="", compare=False)


ARCHS_3D: dict[str, Arch3D] = {
    # SlowOnly (Feichtenhofer et al. 2019): 2D stem, no temporal downsampling, temporal
    # kernels only in res4/res5. mmaction2: ResNet3dSlowOnly defaults.
    "slowonly": Arch3D(notes="mmaction2 ResNet3dSlowOnly"),
    # I3D (Carreira & Zisserman 2017) as in mmaction2's i3d_r50.py: 5x7x7 stem with temporal
    # stride 2, temporal max-pool stride 2, pool2 after res2, alternate inflation.
    "i3d": Arch3D(conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2, with_pool2=True,
                  inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)),
                  zero_init_residual=False, notes="mmaction2 ResNet3d (i3d_r50.py)"),
    # I3D with non-local blocks on every other block of res3 / res4 (i3d_...-r50-nl-<mode>_...)
    **{f"i3d_nl_{mode}": Arch3D(conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2, with_pool2=True,
                                inflate=((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0)),
                                zero_init_residual=False,
                                non_local=((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0)),
                                non_local_mode=mode, non_local_use_scale=False,
                                notes=f"mmaction2 ResNet3d + NonLocal3d ({mode})")
       for mode in ("embedded_gaussian", "gaussian", "dot_product")},
    # SlowOnly with embedded-gaussian non-local blocks (slowonly_r50-in1k-pre-nl-embedded-gaussian_...)
    "slowonly_nl": Arch3D(non_local=((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0)),
                          notes="mmaction2 ResNet3dSlowOnly + NonLocal3d (embedded gaussian)"),
    # I3D "heavy" (i3d_imagenet-pretrained-r50-heavy_...): every block inflated, no temporal
    # downsampling in the stem or its max-pool
    "i3d_heavy": Arch3D(conv1_kernel=(5, 7, 7), with_pool2=True, inflate=(1, 1, 1, 1),
                        zero_init_residual=False, notes="mmaction2 ResNet3d (i3d heavy)"),
    # C2D (Wang et al., non-local nets baseline): a 2D ResNet per frame with one temporal
    # max-pool after res2; mmaction2's C2D uses an unpadded stem max-pool.
    "c2d": Arch3D(pool1_padding=(0, 0, 0), with_pool2=True, inflate=(0, 0, 0, 0),
                  zero_init_residual=False, notes="mmaction2 C2D"),
}


class BasicBlock3d(nn.Module):
    """Two 3x3 convs; with inflation both are 3x3x3 (mmaction2 BasicBlock3d)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, temporal_stride: int = 1,
                 dilation: int = 1, downsample: nn.Module | None = None, inflate: bool = True,
                 inflate_style: str = "3x1x1", conv_kw: dict[str, Any] | None = None) -> None:
        super().__init__()
        ckw = conv_kw or {}
        kt, pt = (3, 1) if inflate else (1, 0)
        self.conv1 = ConvBN(inplanes, planes, (kt, 3, 3), stride=(temporal_stride, spatial_stride, spatial_stride),
                            padding=(pt, dilation, dilation), dilation=(1, dilation, dilation), dims=3, **ckw)
        self.conv2 = ConvBN(planes, planes, (kt, 3, 3), padding=(pt, 1, 1), act=False, dims=3, **ckw)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)
        self.non_local_block: nn.Module | None = None   # set by ResNet3d where the table asks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.conv2(self.conv1(x)) + identity)
        return out if self.non_local_block is None else self.non_local_block(out)


class Bottleneck3d(nn.Module):
    """1x1x1 -> 1x3x3 -> 1x1x1 bottleneck with an optional temporal kernel (pytorch style)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, spatial_stride: int = 1, temporal_stride: int = 1,
                 dilation: int = 1, downsample: nn.Module | None = None, inflate: bool = True,
                 inflate_style: str = "3x1x1", conv_kw: dict[str, Any] | None = None) -> None:
        super().__init__()
        ckw = conv_kw or {}
        if inflate_style not in ("3x1x1", "3x3x3"):
            raise ValueError(f"inflate_style must be '3x1x1' or '3x3x3', got {inflate_style!r}")
        k1, p1 = (1, 1, 1), (0, 0, 0)
        k2, p2 = (1, 3, 3), (0, dilation, dilation)
        if inflate and inflate_style == "3x1x1":
            k1, p1 = (3, 1, 1), (1, 0, 0)
        elif inflate:
            k2, p2 = (3, 3, 3), (1, dilation, dilation)
        self.conv1 = ConvBN(inplanes, planes, k1, padding=p1, dims=3, **ckw)
        self.conv2 = self.make_conv2(planes, k2, (temporal_stride, spatial_stride, spatial_stride), p2,
                                     (1, dilation, dilation), ckw)
        self.conv3 = ConvBN(planes, planes * self.expansion, 1, act=False, dims=3, **ckw)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)
        self.non_local_block: nn.Module | None = None   # set by ResNet3d where the table asks

    def make_conv2(self, planes: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                   padding: tuple[int, int, int], dilation: tuple[int, int, int], ckw: dict[str, Any]) -> nn.Module:
        """The middle convolution (CSN's channel-separated blocks replace it)."""
        return ConvBN(planes, planes, kernel, stride=stride, padding=padding, dilation=dilation, dims=3, **ckw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.conv3(self.conv2(self.conv1(x))) + identity)
        return out if self.non_local_block is None else self.non_local_block(out)


ARCH_SETTINGS_3D: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    18: (BasicBlock3d, (2, 2, 2, 2)),
    34: (BasicBlock3d, (3, 4, 6, 3)),
    50: (Bottleneck3d, (3, 4, 6, 3)),
    101: (Bottleneck3d, (3, 4, 23, 3)),
    152: (Bottleneck3d, (3, 8, 36, 3)),
}


def _per_block(flag: Inflate, blocks: int, what: str) -> tuple[int, ...]:
    if isinstance(flag, int):
        return (flag,) * blocks
    flag = tuple(int(f) for f in flag)
    if len(flag) != blocks:
        raise ValueError(f"{what} has {len(flag)} entries for a stage of {blocks} blocks")
    return flag


class ResNet3d(nn.Module):
    """3D ResNet returning the last stage's feature map ``[N, feat_dim, T', H/32, W/32]``.

    ``arch`` names a row of :data:`ARCHS_3D`; keyword ``arch_overrides`` replace fields of the
    row (e.g. ``inflate=(1, 1, 1, 1)``) for experiments.
    """

    def __init__(self, depth: int = 50, arch: str | Arch3D = "slowonly", in_channels: int = 3,
                 base_channels: int = 64, frozen_stages: int = -1, norm_eval: bool = False,
                 bn_frozen: bool = False, *, block: type[nn.Module] | None = None,
                 conv_kw: dict[str, Any] | None = None, lateral_inplanes: Sequence[int] = (0, 0, 0, 0),
                 **arch_overrides) -> None:
        super().__init__()
        if depth not in ARCH_SETTINGS_3D:
            raise ValueError(f"invalid ResNet3d depth {depth}; choose from {sorted(ARCH_SETTINGS_3D)}")
        if isinstance(arch, str):
            if arch not in ARCHS_3D:
                raise ValueError(f"unknown 3D arch {arch!r}; choose from {sorted(ARCHS_3D)}")
            arch = ARCHS_3D[arch]
        if arch_overrides:
            arch = replace(arch, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in arch_overrides.items()})
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        self.arch = arch
        self.depth = depth
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.bn_frozen = bn_frozen
        default_block, stage_blocks = ARCH_SETTINGS_3D[depth]
        block = block or default_block
        ckw = dict(conv_kw or {})
        kt, kh, kw = arch.conv1_kernel
        self.conv1 = ConvBN(in_channels, base_channels, arch.conv1_kernel,
                            stride=(arch.conv1_stride_t, 2, 2),
                            padding=((kt - 1) // 2, (kh - 1) // 2, (kw - 1) // 2), dims=3, **ckw)
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(arch.pool1_stride_t, 2, 2),
                                    padding=arch.pool1_padding)
        self.pool2 = nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1))
        self.res_layers: list[str] = []
        inplanes = base_channels
        for i, n in enumerate(stage_blocks):
            planes = base_channels * 2 ** i
            s, t = arch.spatial_strides[i], arch.temporal_strides[i]
            inflate = _per_block(arch.inflate[i], n, f"inflate[{i}]")
            downsample = None
            inplanes += int(lateral_inplanes[i])   # SlowFast: the fast pathway's lateral features
            if s != 1 or inplanes != planes * block.expansion:
                downsample = ConvBN(inplanes, planes * block.expansion, 1, stride=(t, s, s), act=False, dims=3,
                                    **ckw)
            blocks = [block(inplanes, planes, s, t, 1, downsample, bool(inflate[0]), arch.inflate_style,
                            conv_kw=ckw)]
            inplanes = planes * block.expansion
            for j in range(1, n):
                blocks.append(block(inplanes, planes, 1, 1, 1, None, bool(inflate[j]), arch.inflate_style,
                                    conv_kw=ckw))
            for j, flag in enumerate(_per_block(arch.non_local[i], n, f"non_local[{i}]")):
                if flag:
                    blocks[j].non_local_block = NonLocal3d(inplanes, arch.non_local_mode, arch.non_local_use_scale,
                                                           arch.non_local_sub_sample)
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.res_layers.append(f"layer{i + 1}")
        self.feat_dim = inplanes
        self.init_weights()
        self._apply_freezing()
        if bn_frozen:
            self._apply_bn_frozen()

    def init_weights(self) -> None:
        """mmaction2's from-scratch init: Kaiming convs, BN 1/0, last BN of each block 0
        when ``zero_init_residual`` (so every residual block starts as the identity)."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():       # mmcv's own init for non-local blocks (identity at start)
            if isinstance(m, NonLocal3d):
                m.init_weights()
        if self.arch.zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck3d):
                    nn.init.zeros_(m.conv3.bn.weight)
                elif isinstance(m, BasicBlock3d):
                    nn.init.zeros_(m.conv2.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.arch.with_pool1:
            x = self.maxpool(x)
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i == 0 and self.arch.with_pool2:
                x = self.pool2(x)
        return x

    def _apply_freezing(self) -> None:
        freeze_stages(self, self.frozen_stages)

    def train(self, mode: bool = True) -> "ResNet3d":
        super().train(mode)
        if not mode:
            return self
        eval_frozen_stages(self, self.frozen_stages, self.norm_eval)
        return self

    def _apply_bn_frozen(self) -> None:
        """mmaction2's ``bn_frozen`` (CSN's IG65M / Sports-1M fine-tuning rows): BatchNorm affine
        parameters take no gradient (with ``norm_eval``, statistics stay fixed too)."""
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for prm in m.parameters():
                    prm.requires_grad = False



# ---------------------------------------------------------------------------------------------
# the family and its zoo rows
# ---------------------------------------------------------------------------------------------
def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 50))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    backbone = ResNet3d(depth=depth, arch=preset.arch, base_channels=base_channels, in_channels=in_channels,
                        **opts)
    head = I3DHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout,
                arch_row={k: v for k, v in asdict(backbone.arch).items() if k != "notes"})
    return Recognizer3D(backbone, head, meta)


FAMILY = register_family(Family(
    name="resnet3d", layout="3d", build=_build,
    overrides=frozenset({"frozen_stages", "norm_eval", "bn_frozen"} | {f.name for f in fields(Arch3D) if f.name != "notes"}),
    tiny={"base_channels": 8},
    pretrained_state=imagenet_resnet_state, inflate=True,
    doc="3D ResNets from one table: SlowOnly, I3D, C2D (mmaction2 ResNet3d / ResNet3dSlowOnly / C2D + I3DHead)",
))


def resnet3d_row(name: str, arch: str, clip_len: int, interval: int, mm: tuple[str, ...], *, depth: int = 50,
                 dataset: str = "kinetics400", classes: int = 400, epochs: int = 256, imagenet: bool = False,
                 params: int | None = None, preset: str | None = None, doc: str = "", family: str = "resnet3d",
                 **kw: Any) -> ModelPreset:
    """A row: variant ``arch`` of :data:`ARCHS_3D` (or of ``family``'s own table), ``clip_len`` x
    ``interval`` x 1 clips."""
    pre = preset or f"{arch}_{clip_len}x{interval}x1"
    return ModelPreset(
        name=name, family=family, arch=arch, depth=depth, num_classes=classes, dataset=dataset,
        clip_len=clip_len, frame_interval=interval, num_clips=1, epochs=epochs, train_preset=f"{pre}_train",
        test_preset=f"{pre}_test", mmaction2_configs=mm, imagenet_pretrained=imagenet, dropout=0.5,
        init_std=0.01, params=params, doc=doc, **kw)


# Parameter counts: mmaction2 1.2.0 (`MODELS.build(cfg.model)` with pretrained=None, summed over
# parameters; ../shared/tools/mmaction2-reference), not results of this code.
ROWS = register_presets([
    resnet3d_row("slowonly_r50_4x16x1_256e_kinetics400_rgb", "slowonly", 4, 16,
                 ("slowonly_r50_8xb16-4x16x1-256e_kinetics400-rgb",), params=32_454_096,
                 doc="SlowOnly ResNet-50 4x16, trained from scratch on Kinetics-400"),
    resnet3d_row("slowonly_r50_8x8x1_256e_kinetics400_rgb", "slowonly", 8, 8,
                 ("slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb",), params=32_454_096,
                 doc="SlowOnly ResNet-50 8x8, from scratch, Kinetics-400"),
    resnet3d_row("slowonly_r50_8x8x1_256e_minikinetics_rgb", "slowonly", 8, 8, (), dataset="minikinetics",
                 classes=200, doc="SlowOnly ResNet-50 8x8, Mini-Kinetics (200 classes): the OmniSource paper's 3D model"),
    resnet3d_row("slowonly_r101_8x8x1_196e_kinetics400_rgb", "slowonly", 8, 8,
                 ("slowonly_r101_8xb16-8x8x1-196e_kinetics400-rgb",), depth=101, epochs=196, params=60_359_120,
                 doc="SlowOnly ResNet-101 8x8, from scratch, Kinetics-400"),
    resnet3d_row("slowonly_imagenet_pretrained_r50_4x16x1_150e_kinetics400_rgb", "slowonly", 4, 16,
                 ("slowonly_imagenet-pretrained-r50_8xb16-4x16x1-steplr-150e_kinetics400-rgb",), epochs=150,
                 imagenet=True, params=32_454_096,
                 doc="SlowOnly ResNet-50 4x16 from inflated ImageNet weights (pass pretrained=PATH)"),
    resnet3d_row("slowonly_imagenet_pretrained_r50_8x8x1_150e_kinetics400_rgb", "slowonly", 8, 8,
                 ("slowonly_imagenet-pretrained-r50_8xb16-8x8x1-steplr-150e_kinetics400-rgb",), epochs=150,
                 imagenet=True, params=32_454_096,
                 doc="SlowOnly ResNet-50 8x8 from inflated ImageNet weights (pass pretrained=PATH)"),
    resnet3d_row("slowonly_imagenet_pretrained_r50_4x16x1_150e_kinetics700_rgb", "slowonly", 4, 16,
                 ("slowonly_imagenet-pretrained-r50_16xb16-4x16x1-steplr-150e_kinetics700-rgb",), epochs=150,
                 imagenet=True, dataset="kinetics700", classes=700, params=33_068_796,
                 doc="SlowOnly ResNet-50 4x16, ImageNet-inflated, Kinetics-700"),
    resnet3d_row("slowonly_imagenet_pretrained_r50_8x8x1_150e_kinetics700_rgb", "slowonly", 8, 8,
                 ("slowonly_imagenet-pretrained-r50_16xb16-8x8x1-steplr-150e_kinetics700-rgb",), epochs=150,
                 imagenet=True, dataset="kinetics700", classes=700, params=33_068_796,
                 doc="SlowOnly ResNet-50 8x8, ImageNet-inflated, Kinetics-700"),
    resnet3d_row("slowonly_imagenet_pretrained_r50_8x8x1_150e_kinetics710_rgb", "slowonly", 8, 8,
                 ("slowonly_imagenet-pretrained-r50_32xb8-8x8x1-steplr-150e_kinetics710-rgb",), epochs=150,
                 imagenet=True, dataset="kinetics710", classes=710, params=33_089_286,
                 doc="SlowOnly ResNet-50 8x8, ImageNet-inflated, Kinetics-710 (K400+K600+K700 union)"),
    resnet3d_row("i3d_r50_32x2x1_100e_kinetics400_rgb", "i3d", 32, 2,
                 ("i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb",), epochs=100, imagenet=True,
                 params=28_043_472, doc="I3D ResNet-50 32x2 (mmaction2 i3d_r50.py), ImageNet-inflated"),
    resnet3d_row("i3d_r50_heavy_32x2x1_100e_kinetics400_rgb", "i3d_heavy", 32, 2,
                 ("i3d_imagenet-pretrained-r50-heavy_8xb8-32x2x1-100e_kinetics400-rgb",), epochs=100, imagenet=True,
                 params=33_024_208, preset="i3d_32x2x1",
                 doc="I3D ResNet-50 heavy: every block inflated, full temporal resolution"),
    resnet3d_row("i3d_r50_dense_32x2x1_100e_kinetics400_rgb", "i3d", 32, 2,
                 ("i3d_imagenet-pretrained-r50_8xb8-dense-32x2x1-100e_kinetics400-rgb",), epochs=100, imagenet=True,
                 params=28_043_472, preset="i3d_dense_32x2x1",
                 doc="I3D ResNet-50 32x2 with dense sampling (DenseSampleFrames, 10 test positions)"),
    *[resnet3d_row(f"i3d_nl_{mode}_r50_32x2x1_100e_kinetics400_rgb", f"i3d_nl_{mode}", 32, 2,
                   (f"i3d_imagenet-pretrained-r50-nl-{mode.replace('_', '-')}_8xb8-32x2x1-100e_kinetics400-rgb",),
                   epochs=100, imagenet=True, params=params, preset="i3d_32x2x1",
                   doc=f"I3D ResNet-50 32x2 with {mode.replace('_', ' ')} non-local blocks (res3, res4)")
      for mode, params in (("embedded_gaussian", 35_397_840), ("gaussian", 31_723_728),
                           ("dot_product", 35_397_840))],
    resnet3d_row("slowonly_nl_embedded_gaussian_r50_4x16x1_150e_kinetics400_rgb", "slowonly_nl", 4, 16,
                 ("slowonly_r50-in1k-pre-nl-embedded-gaussian_8xb16-4x16x1-steplr-150e_kinetics400-rgb",),
                 epochs=150, imagenet=True, params=39_808_464, preset="slowonly_4x16x1",
                 doc="SlowOnly ResNet-50 4x16 with embedded-gaussian non-local blocks, ImageNet-inflated"),
    resnet3d_row("slowonly_nl_embedded_gaussian_r50_8x8x1_150e_kinetics400_rgb", "slowonly_nl", 8, 8,
                 ("slowonly_r50-in1k-pre-nl-embedded-gaussian_8xb16-8x8x1-steplr-150e_kinetics400-rgb",),
                 epochs=150, imagenet=True, params=39_808_464, preset="slowonly_8x8x1",
                 doc="SlowOnly ResNet-50 8x8 with embedded-gaussian non-local blocks, ImageNet-inflated"),
    resnet3d_row("slowonly_r50_16x4x1_256e_kinetics400_flow", "slowonly", 16, 4,
                 ("slowonly_r50_8xb16-16x4x1-256e_kinetics400-flow",), params=32_450_960,
                 preset="slowonly_flow_16x4x1", model={"in_channels": 2}, mean=(128.0, 128.0), std=(128.0, 128.0),
                 doc="SlowOnly ResNet-50 16x4 on optical flow (2-channel x / y clips), from scratch"),
    resnet3d_row("c2d_r50_8x8x1_100e_kinetics400_rgb", "c2d", 8, 8,
                 ("c2d_r50-in1k-pre_8xb32-8x8x1-100e_kinetics400-rgb",), epochs=100, imagenet=True,
                 params=24_327_632, doc="C2D ResNet-50 8x8 (2D kernels, one temporal pool after res2)"),
    resnet3d_row("c2d_r50_16x4x1_100e_kinetics400_rgb", "c2d", 16, 4,
                 ("c2d_r50-in1k-pre_8xb32-16x4x1-100e_kinetics400-rgb",), epochs=100, imagenet=True,
                 params=24_327_632, doc="C2D ResNet-50 16x4, Kinetics-400"),
])
