"""TSM family (Lin et al. 2019, "TSM: Temporal Shift Module for Efficient Video Understanding"):
a 2D ResNet whose residual branches shift an eighth of their channels one frame back and an
eighth one frame forward, so a per-frame network exchanges information between neighbouring
segments at no extra FLOPs.

Family ``tsm``, input contract ``'2d'``: frames ``[N, S, 3, H, W]``, where ``S`` is a whole
number of ``num_segments``-frame groups (8 segments x 10 crops at test: each crop's 8 frames are
shifted among themselves). As mmaction2's ``ResNetTSM`` (``shift_place='blockres'``): the shift
wraps ``conv1.conv`` of each bottleneck (every other block of ResNet-101, whose ``layer3`` has 23),
so the keys are ``layerN.M.conv1.conv.net.weight``; the non-local rows wrap blocks of res3 / res4
as ``layerN.M.block.*`` + ``layerN.M.non_local_block.*`` (a 3D non-local over the segments).
``TSMHead`` scores every frame and averages the scores of each group: one score row per view.

The MobileNetV2 row (``arch='mobilenet_v2'``, blocks in ``mobilenet_v2.py``) shifts the expansion
conv of every residual inverted block, as mmaction2's ``MobileNetV2TSM``.

Overrides: ``num_segments``, ``shift_div``, ``non_local``, ``non_local_mode``, the 2D ResNet's
(``frozen_stages``, ``norm_eval``, ``partial_bn``) and the common ones; ``pretrained`` takes an
ImageNet ResNet file (torchvision / timm / mmpretrain names, mapped onto the shifted convs).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import torch
from torch import nn

from omnisource.models.heads import TSNHead
from omnisource.models.nonlocal_block import NonLocal3d
from omnisource.models.recognizers import Recognizer2D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet import ResNet, imagenet_resnet_state

__all__ = ["temporal_shift", "TemporalShift", "NL3DWrapper", "TSMHead", "segment_group_input", "FAMILY", "ROWS"]


def temporal_shift(x: torch.Tensor, num_segments: int, shift_div: int = 8) -> torch.Tensor:
    """``[N*T, C, H, W]``: channels ``[0, C/div)`` take the next frame's values, ``[C/div, 2C/div)``
    the previous frame's, zeros at the clip's ends; the rest is unchanged."""
    nt, c, h, w = x.shape
    x = x.view(-1, num_segments, c, h, w)
    fold = c // shift_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
    """Shift, then the wrapped convolution (its parameters live under ``.net``, as mmaction2's)."""

    def __init__(self, net: nn.Module, num_segments: int = 8, shift_div: int = 8) -> None:
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.shift_div = shift_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.num_segments:
            raise ValueError(f"TSM needs whole groups of {self.num_segments} frames, got {x.shape[0]} frames")
        return self.net(temporal_shift(x, self.num_segments, self.shift_div))


class NL3DWrapper(nn.Module):
    """A residual block followed by a non-local block over the segments of each group."""

    def __init__(self, block: nn.Module, channels: int, num_segments: int, mode: str) -> None:
        super().__init__()
        self.block = block
        self.non_local_block = NonLocal3d(channels, mode, use_scale=False, sub_sample=True)
        self.num_segments = num_segments

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        n, c, h, w = x.shape
        x = x.view(n // self.num_segments, self.num_segments, c, h, w).transpose(1, 2)
        x = self.non_local_block(x.contiguous())
        return x.transpose(1, 2).contiguous().view(n, c, h, w)


class TSMHead(TSNHead):
    """Average pool per frame, dropout, fc, then the average score of each ``num_segments`` group."""

    def __init__(self, num_classes: int, in_channels: int, num_segments: int = 8, dropout: float = 0.5,
                 init_std: float = 0.001) -> None:
        super().__init__(num_classes, in_channels, dropout=dropout, init_std=init_std)
        self.num_segments = num_segments

    def forward(self, x: torch.Tensor, num_segs: int) -> torch.Tensor:
        scores = self.classify(x.mean(dim=(2, 3)))
        return scores.view(-1, self.num_segments, scores.shape[-1]).mean(dim=1)


def make_tsm(backbone: ResNet, num_segments: int, shift_div: int, non_local: Sequence[Any] = (0, 0, 0, 0),
             non_local_mode: str = "embedded_gaussian") -> ResNet:
    """Wrap a 2D ResNet's residual convs with temporal shifts (and blocks with non-local ones)."""
    n_round = 2 if len(getattr(backbone, "layer3")) >= 23 else 1
    for name in backbone.res_layers:
        for i, block in enumerate(getattr(backbone, name)):
            if i % n_round == 0:
                block.conv1.conv = TemporalShift(block.conv1.conv, num_segments, shift_div)
    for s, flags in enumerate(non_local):
        layer = getattr(backbone, f"layer{s + 1}")
        flags = [flags] * len(layer) if isinstance(flags, int) else list(flags)
        for i, flag in enumerate(flags):
            if flag:
                blk = layer[i]
                layer[i] = NL3DWrapper(blk, blk.conv3.bn.num_features, num_segments, non_local_mode)
    for m in backbone.modules():   # mmcv's own init of the non-local blocks (identity at start)
        if isinstance(m, NonLocal3d):
            m.init_weights()
    return backbone


def tsm_pretrained_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """An ImageNet ResNet file in TSM's names: the shifted convs' weights move under ``.net``."""
    out, fmt = imagenet_resnet_state(sd)
    if not out:
        return out, fmt
    n_round = 2 if any(k.startswith("layer3.22.") for k in out) else 1
    mapped = {}
    for k, v in out.items():
        m = re.match(r"(layer\d+)\.(\d+)\.conv1\.conv\.(weight|bias)$", k)
        if m and int(m.group(2)) % n_round == 0:
            k = f"{m.group(1)}.{m.group(2)}.conv1.conv.net.{m.group(3)}"
        mapped[k] = v
    return mapped, fmt


def make_tsm_mobilenet_v2(backbone: nn.Module, num_segments: int, shift_div: int) -> nn.Module:
    """mmaction2's MobileNetV2TSM: the shift wraps the expansion conv (``conv.0``) of every inverted
    residual block that has one and a residual connection (keys ``conv.0.net.{conv,bn}``)."""
    from omnisource.models.mobilenet_v2 import InvertedResidual

    for m in backbone.modules():
        if isinstance(m, InvertedResidual) and len(m.conv) == 3 and m.use_res_connect:
            m.conv[0] = TemporalShift(m.conv[0], num_segments, shift_div)
    return backbone


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    if preset.arch == "mobilenet_v2":
        return _build_mobilenet(preset, num_classes, opts, meta)
    depth = int(opts.pop("depth", preset.depth or 50))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    segs = int(opts.pop("num_segments", preset.num_clips))
    shift_div = int(opts.pop("shift_div", 8))
    non_local = opts.pop("non_local", (0, 0, 0, 0))
    mode = str(opts.pop("non_local_mode", "embedded_gaussian"))
    backbone = make_tsm(ResNet(depth=depth, base_channels=base_channels, in_channels=in_channels, **opts),
                        segs, shift_div, non_local, mode)
    head = TSMHead(num_classes, backbone.feat_dim, segs, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout,
                num_segments=segs, shift_div=shift_div)
    return Recognizer2D(backbone, head, meta)


def _build_mobilenet(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    from omnisource.models.mobilenet_v2 import MobileNetV2

    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    in_channels = int(opts.pop("in_channels", 3))
    segs = int(opts.pop("num_segments", preset.num_clips))
    shift_div = int(opts.pop("shift_div", 8))
    widen = float(opts.pop("base_channels", 32)) / 32     # base_channels: the stem width (32 at 1.0x)
    unknown = set(opts) - {"norm_eval"}
    if unknown:
        raise ValueError(f"options {sorted(unknown)} do not apply to the MobileNetV2 TSM")
    backbone = make_tsm_mobilenet_v2(MobileNetV2(widen, in_channels, bool(opts.get("norm_eval", False))),
                                     segs, shift_div)
    head = TSMHead(num_classes, backbone.feat_dim, segs, dropout=dropout, init_std=init_std)
    meta.update(in_channels=in_channels, dropout=dropout, num_segments=segs, shift_div=shift_div, widen_factor=widen)
    return Recognizer2D(backbone, head, meta)


def segment_group_input(model: nn.Module, n: int) -> torch.Tensor:
    """Example input of families that mix a clip's segments (TSM, TIN, TRN, TANet): one group of
    ``num_segments`` frames per sample."""
    return torch.randn(n, int(model.meta["num_segments"]), int(model.meta.get("in_channels", 3)), 32, 32)


FAMILY = register_family(Family(
    name="tsm", layout="2d", build=_build,
    overrides=frozenset({"num_segments", "shift_div", "non_local", "non_local_mode", "frozen_stages",
                         "norm_eval", "partial_bn"}),
    tiny={"base_channels": 8},
    example_input=segment_group_input,
    pretrained_fresh=(r"\.non_local_block\.",),
    pretrained_state=tsm_pretrained_state, inflate=False,
    doc="TSM: 2D ResNet with temporal shifts in the residual branch (mmaction2 ResNetTSM + TSMHead)",
))


_NL = ((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0))


def _row(name: str, segs: int, mm: tuple[str, ...], params: int, doc: str, *, depth: int = 50,
         dataset: str = "kinetics400", classes: int = 400, epochs: int = 50, preset: str | None = None,
         model: dict | None = None) -> ModelPreset:
    pre = preset or f"tsm_1x1x{segs}"
    return ModelPreset(name=name, family="tsm", depth=depth, num_classes=classes, dataset=dataset, clip_len=1,
                       frame_interval=1, num_clips=segs, epochs=epochs, train_preset=f"{pre}_train",
                       test_preset=f"{pre}_test", mmaction2_configs=mm, imagenet_pretrained=True, dropout=0.5,
                       init_std=0.001, params=params, doc=doc, model=model or {})


# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    _row("tsm_r50_1x1x8_50e_kinetics400_rgb", 8, ("tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb",),
         24_327_632, "TSM ResNet-50, 8 segments, 50 epochs, Kinetics-400"),
    _row("tsm_r50_1x1x8_100e_kinetics400_rgb", 8, ("tsm_imagenet-pretrained-r50_8xb16-1x1x8-100e_kinetics400-rgb",),
         24_327_632, "TSM ResNet-50, 8 segments, 100 epochs, Kinetics-400", epochs=100),
    _row("tsm_r50_1x1x16_50e_kinetics400_rgb", 16, ("tsm_imagenet-pretrained-r50_8xb16-1x1x16-50e_kinetics400-rgb",),
         24_327_632, "TSM ResNet-50, 16 segments, Kinetics-400"),
    _row("tsm_r50_dense_1x1x8_50e_kinetics400_rgb", 8,
         ("tsm_imagenet-pretrained-r50_8xb16-dense-1x1x8-50e_kinetics400-rgb",), 24_327_632,
         "TSM ResNet-50, 8 dense segments (DenseSampleFrames), Kinetics-400", preset="tsm_dense_1x1x8"),
    *[_row(f"tsm_nl_{mode}_r50_1x1x8_50e_kinetics400_rgb", 8,
           (f"tsm_imagenet-pretrained-r50-nl-{mode.replace('_', '-')}_8xb16-1x1x8-50e_kinetics400-rgb",), params,
           f"TSM ResNet-50 with {mode.replace('_', ' ')} non-local blocks (res3, res4), Kinetics-400",
           model={"non_local": _NL, "non_local_mode": mode})
      for mode, params in (("embedded_gaussian", 31_682_000), ("gaussian", 28_007_888), ("dot_product", 31_682_000))],
    ModelPreset(name="tsm_mobilenetv2_dense_1x1x8_100e_kinetics400_rgb", family="tsm", arch="mobilenet_v2",
                num_classes=400, dataset="kinetics400", clip_len=1, frame_interval=1, num_clips=8, epochs=100,
                train_preset="tsm_mnv2_1x1x8_train", test_preset="tsm_mnv2_1x1x8_test",
                mmaction2_configs=("tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb",),
                imagenet_pretrained=True, dropout=0.5, init_std=0.001, params=2_736_272,
                doc="TSM MobileNetV2, 8 segments, Kinetics-400 (the 1.x config samples uniformly, not densely)"),
    _row("tsm_r50_1x1x8_50e_sthv2_rgb", 8, ("tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv2-rgb",), 23_864_558,
         "TSM ResNet-50, 8 segments, Something-Something V2 (flip swaps left/right classes)", dataset="sthv2",
         classes=174, preset="tsm_sthv2_1x1x8"),
    _row("tsm_r50_1x1x16_50e_sthv2_rgb", 16, ("tsm_imagenet-pretrained-r50_8xb16-1x1x16-50e_sthv2-rgb",), 23_864_558,
         "TSM ResNet-50, 16 segments, Something-Something V2", dataset="sthv2", classes=174,
         preset="tsm_sthv2_1x1x16"),
    _row("tsm_r101_1x1x8_50e_sthv2_rgb", 8, ("tsm_imagenet-pretrained-r101_8xb16-1x1x8-50e_sthv2-rgb",), 42_856_686,
         "TSM ResNet-101, 8 segments, Something-Something V2", depth=101, dataset="sthv2", classes=174,
         preset="tsm_sthv2_1x1x8"),
])
