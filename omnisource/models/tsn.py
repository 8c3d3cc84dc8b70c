"""TSN family: a 2D ResNet per frame, average consensus over segments (Wang et al., 2016).

Input contract ``'2d'``: frames ``[N, S, 3, H, W]`` (S = segments x views, or every frame of
every clip: the C2D *no-pool* rows are this family with 8-frame clips, mmaction2's
``tsn_r50.py`` model fed ``FormatShape('NCHW')`` clips). Blocks: :mod:`omnisource.models.resnet`
(its ImageNet key map is this family's ``pretrained_state`` hook), :class:`TSNHead`,
:class:`Recognizer2D`. Rows: one per mmaction2 zoo config, with mmaction2 1.2.0's parameter count.

Overrides: ``depth``, ``base_channels``, ``in_channels``, ``dropout``, ``init_std``,
``frozen_stages``, ``norm_eval``, ``partial_bn`` (TSN partial BN), ``pretrained`` (a local
ImageNet ResNet file: torchvision / timm / mmpretrain, or a recognizer checkpoint).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from omnisource.models.heads import TSNHead
from omnisource.models.recognizers import Recognizer2D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet import ResNet, imagenet_resnet_state

__all__ = ["FAMILY", "ROWS", "tsn_row"]


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 50))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    backbone = ResNet(depth=depth, base_channels=base_channels, in_channels=in_channels, **opts)
    head = TSNHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout)
    return Recognizer2D(backbone, head, meta)


FAMILY = register_family(Family(
    name="tsn", layout="2d", build=_build,
    overrides=frozenset({"frozen_stages", "norm_eval", "partial_bn"}),
    tiny={"base_channels": 8},
    pretrained_state=imagenet_resnet_state, inflate=False,
    doc="TSN: 2D ResNet per frame + average consensus (mmaction2 Recognizer2D / TSNHead)",
))


def tsn_row(name: str, segs: int, mm: tuple[str, ...], *, depth: int = 50, dataset: str = "kinetics400",
            classes: int = 400, epochs: int = 100, params: int | None = None, dropout: float = 0.4,
            preset: str | None = None, clip_len: int = 1, frame_interval: int = 1, doc: str = "",
            **kw: Any) -> ModelPreset:
    """A TSN row: ``segs`` segments (training clips) of ``clip_len`` frames, ImageNet-initialised."""
    pre = preset or f"tsn_1x1x{segs}"
    return ModelPreset(
        name=name, family="tsn", depth=depth, num_classes=classes, dataset=dataset, clip_len=clip_len,
        frame_interval=frame_interval, num_clips=segs, epochs=epochs, train_preset=f"{pre}_train",
        test_preset=f"{pre}_test", mmaction2_configs=mm, imagenet_pretrained=True, dropout=dropout,
        init_std=0.01, params=params, doc=doc, **kw)


# Parameter counts: mmaction2 1.2.0 (`MODELS.build(cfg.model)` with pretrained=None, summed over
# parameters; ../shared/tools/mmaction2-reference), not results of this code.
ROWS = register_presets([
    tsn_row("tsn_r50_1x1x3_100e_kinetics400_rgb", 3,
            ("tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb",), params=24_327_632,
            doc="TSN ResNet-50, 3 segments, Kinetics-400"),
    tsn_row("tsn_r50_1x1x5_100e_kinetics400_rgb", 5,
            ("tsn_imagenet-pretrained-r50_8xb32-1x1x5-100e_kinetics400-rgb",), params=24_327_632,
            doc="TSN ResNet-50, 5 segments, Kinetics-400"),
    tsn_row("tsn_r50_1x1x8_100e_kinetics400_rgb", 8,
            ("tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb",), params=24_327_632,
            doc="TSN ResNet-50, 8 segments, Kinetics-400"),
    tsn_row("tsn_r50_dense_1x1x5_100e_kinetics400_rgb", 5,
            ("tsn_imagenet-pretrained-r50_8xb32-dense-1x1x5-100e_kinetics400-rgb",), params=24_327_632,
            dropout=0.5, preset="tsn_dense_1x1x5",
            doc="TSN ResNet-50, 5 dense segments (DenseSampleFrames), Kinetics-400"),
    tsn_row("tsn_r50_1x1x8_50e_sthv2_rgb", 8, ("tsn_imagenet-pretrained-r50_8xb32-1x1x8-50e_sthv2-rgb",),
            dataset="sthv2", classes=174, epochs=50, dropout=0.5, params=23_864_558, preset="tsn_sthv2_1x1x8",
            doc="TSN ResNet-50, 8 segments, Something-Something V2 (flip swaps left/right classes)"),
    tsn_row("tsn_r50_1x1x16_50e_sthv2_rgb", 16, ("tsn_imagenet-pretrained-r50_8xb32-1x1x16-50e_sthv2-rgb",),
            dataset="sthv2", classes=174, epochs=50, dropout=0.5, params=23_864_558, preset="tsn_sthv2_1x1x16",
            doc="TSN ResNet-50, 16 segments, Something-Something V2"),
    tsn_row("tsn_r101_1x1x8_100e_kinetics400_rgb", 8,
            ("tsn_imagenet-pretrained-r101_8xb32-1x1x8-100e_kinetics400-rgb",), depth=101, params=43_319_760,
            doc="TSN ResNet-101, 8 segments, Kinetics-400"),
    tsn_row("tsn_r50_5x1x3_110e_kinetics400_flow", 3, ("tsn_imagenet-pretrained-r50_8xb32_5x1x3-110e_kinetics400-flow",),
            params=24_349_584, epochs=110, clip_len=5, preset="tsn_flow_5x1x3", model={"in_channels": 10},
            mean=(128.0,) * 10, std=(128.0,) * 10,
            doc="TSN ResNet-50 on optical flow: 3 segments of 5 x / y frames stacked into 10 channels "
                "(ImageNet stem averaged over RGB, repeated)"),
    tsn_row("tsn_r50_1x1x8_100e_minikinetics_rgb", 8, (), dataset="minikinetics", classes=200,
            doc="TSN ResNet-50, 8 segments, Mini-Kinetics (200 classes): the OmniSource paper's 2D model"),
    tsn_row("tsn_r18_1x1x3_100e_kinetics400_rgb", 3, (), depth=18,
            doc="TSN ResNet-18, 3 segments (a cheap extra; not in the mmaction2 zoo)"),
    # C2D without the temporal pool: mmaction2 builds these from tsn_r50.py (Recognizer2D, TSNHead)
    # and feeds 8x8x1 clips as 8 segments
    tsn_row("c2d_r50_nopool_8x8x1_100e_kinetics400_rgb", 1,
            ("c2d_r50-in1k-pre-nopool_8xb32-8x8x1-100e_kinetics400-rgb",), params=24_327_632,
            preset="c2d_nopool_8x8x1", clip_len=8, frame_interval=8,
            doc="C2D ResNet-50 without temporal pooling (a TSN over 8x8x1 clips), Kinetics-400"),
    tsn_row("c2d_r101_nopool_8x8x1_100e_kinetics400_rgb", 1,
            ("c2d_r101-in1k-pre-nopool_8xb32-8x8x1-100e_kinetics400-rgb",), depth=101, params=43_319_760,
            preset="c2d_nopool_8x8x1", clip_len=8, frame_interval=8,
            doc="C2D ResNet-101 without temporal pooling, Kinetics-400"),
])
