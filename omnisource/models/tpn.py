"""TPN family (Yang et al. 2020, "Temporal Pyramid Network for Action Recognition"): a
temporal feature pyramid over the last two stages of a SlowOnly-R50, with an auxiliary head on
res4 whose loss is added in training.

Family ``tpn``, input contract ``'3d'``. As mmaction2's ``TPN`` neck (``configs/_base_/models/
tpn_slowonly_r50.py``): spatial modulation brings res4 to res5's size (a strided 1x3x3 conv),
temporal modulation (a grouped 3x1x1 conv and a temporal max-pool by 8) to one rate, then a
top-down and a bottom-up information flow (cascaded), each fused by a ``LevelFusion``, and a 1x1
``pyramid_fusion`` to 2048 channels; the head pools and classifies (``TPNHead`` = pooled fc).
The auxiliary head (``neck.aux_head``: strided 1x3x3 conv + BN + ReLU, pool, dropout, fc) scores
res4; :meth:`TPNRecognizer.forward` with a ``loss_fn`` returns ``loss_cls`` and ``loss_aux``
(weight 0.5, mmaction2's), so the trainer adds and logs both. Keys equal mmaction2's.

Family ``tpn_tsm``, input contract ``'2d'`` (``tpn-tsm_..._sthv1``): the same neck on a TSM-R50
(``ResNetTSM`` with ``out_indices=(2, 3)``): the frames of each group of ``num_segments`` go
through the shifted 2D ResNet, res4 and res5 are folded back into ``[views, C, segments, h, w]``
(mmaction2's Recognizer2D with a neck) and the neck pools time by 8, so each view gets one score
row, as mmaction2's ``fcn_test`` gives at test time (its 2D head is the pooled fc, ``new_cls``
being ``fc_cls`` as a 1x1x1 convolution).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnisource.models.heads import I3DHead
from omnisource.models.layers import ConvBN
from omnisource.models.recognizers import LossFn, Recognizer2D, Recognizer3D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet import ResNet, imagenet_resnet_state
from omnisource.models.resnet3d import ResNet3d
from omnisource.models.tsm import make_tsm, segment_group_input, tsm_pretrained_state

__all__ = ["TPN", "TPNRecognizer", "TPNTSMRecognizer", "FAMILY", "FAMILY_TSM", "ROWS"]


class DownSample(nn.Module):
    """conv (+pool before or after), mmaction2's TPN DownSample."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (3, 1, 1),
                 padding: tuple[int, int, int] = (1, 0, 0), groups: int = 1, norm_act: bool = False,
                 position: str = "after", scale: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = ConvBN(cin, cout, kernel, padding=padding, groups=groups, dims=3, norm=norm_act, bias=False,
                           act=norm_act)
        self.position = position
        self.pool = nn.MaxPool3d(scale, scale, 0, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x)) if self.position == "after" else self.conv(self.pool(x))


class LevelFusion(nn.Module):
    def __init__(self, cins: tuple[int, ...], mids: tuple[int, ...], cout: int) -> None:
        super().__init__()
        self.downsamples = nn.ModuleList(DownSample(ci, cm, (1, 1, 1), (0, 0, 0), groups=32, norm_act=True,
                                                    position="before") for ci, cm in zip(cins, mids))
        self.fusion_conv = ConvBN(sum(mids), cout, 1, dims=3)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.fusion_conv(torch.cat([d(x) for d, x in zip(self.downsamples, xs)], 1))


class SpatialModulation(nn.Module):
    def __init__(self, cins: tuple[int, ...], cout: int) -> None:
        super().__init__()
        ops: list[nn.Module] = []
        for c in cins:
            factor = (cout // c).bit_length() - 1          # log2 of the spatial ratio
            if factor < 1:
                ops.append(nn.Identity())
            else:
                ops.append(nn.ModuleList(ConvBN(c * 2 ** f, c * 2 ** (f + 1), (1, 3, 3), stride=(1, 2, 2),
                                                padding=(0, 1, 1), dims=3) for f in range(factor)))
        self.spatial_modulation = nn.ModuleList(ops)

    def forward(self, xs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        out = []
        for op, x in zip(self.spatial_modulation, xs):
            if isinstance(op, nn.ModuleList):
                for m in op:
                    x = m(x)
            else:
                x = op(x)
            out.append(x)
        return out


class TemporalModulation(nn.Module):
    def __init__(self, cin: int, cout: int, scale: int) -> None:
        super().__init__()
        self.conv = ConvBN(cin, cout, (3, 1, 1), padding=(1, 0, 0), groups=32, dims=3, norm=False, bias=False,
                           act=False)
        self.pool = nn.MaxPool3d((scale, 1, 1), (scale, 1, 1), 0, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class AuxHead(nn.Module):
    def __init__(self, cin: int, num_classes: int, loss_weight: float = 0.5) -> None:
        super().__init__()
        self.conv = ConvBN(cin, cin * 2, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), dims=3)
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(cin * 2, num_classes)
        self.loss_weight = loss_weight
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.conv(x).mean(dim=(2, 3, 4))))


class TPN(nn.Module):
    """The neck: ``(res4, res5)`` -> ``[N, 2048, T', h, w]`` (and the auxiliary head)."""

    def __init__(self, cins: tuple[int, int] = (1024, 2048), cout: int = 1024, num_classes: int = 400,
                 temporal_scales: tuple[int, int] = (8, 8), aux_weight: float = 0.5) -> None:
        super().__init__()
        self.spatial_modulation = SpatialModulation(cins, cins[-1])
        self.temporal_modulation_ops = nn.ModuleList(TemporalModulation(cins[-1], cout, s) for s in temporal_scales)
        self.upsample_ops = nn.ModuleList([nn.Upsample(scale_factor=(1, 1, 1))])
        self.downsample_ops = nn.ModuleList([DownSample(cout, cout)])
        fused = 2 * cout
        self.level_fusion_1 = LevelFusion((cout, cout), (cout, cout), fused)
        self.level_fusion_2 = LevelFusion((cout, cout), (cout, cout), fused)
        self.pyramid_fusion = ConvBN(2 * fused, 2048, 1, dims=3)
        self.aux_head = AuxHead(cins[-2], num_classes, aux_weight)
        for m in self.modules():       # mmaction2's TPN init: Xavier-uniform convs, BN weight 1
            if isinstance(m, nn.Conv3d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, xs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        sm = self.spatial_modulation(xs)
        tm = [op(x) for op, x in zip(self.temporal_modulation_ops, sm)]
        outs = [t.clone() for t in tm]
        outs[0] = outs[0] + self.upsample_ops[0](outs[1])            # top-down
        top_down = self.level_fusion_1(outs)
        outs[1] = outs[1] + self.downsample_ops[0](outs[0])          # then bottom-up (cascade)
        bottom_up = self.level_fusion_2(outs)
        return self.pyramid_fusion(torch.cat([top_down, bottom_up], 1))


def _res4_res5(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """res4 and res5 of a (2D or 3D) ResNet stem + stages (mmaction2 ``out_indices=(2, 3)``)."""
    x = net.maxpool(net.conv1(x))
    outs = []
    for name in net.res_layers:
        x = getattr(net, name)(x)
        outs.append(x)
    return outs[2], outs[3]


class _Backbone(ResNet3d):
    """SlowOnly-R50 returning res4 and res5."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return _res4_res5(self, x)


class _ResNetRes45(ResNet):
    """2D ResNet returning res4 and res5 (mmaction2 ``ResNetTSM(out_indices=(2, 3))``)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return _res4_res5(self, x)


class _Pyramid:
    """What both TPN recognizers share once their input is the neck's ``(res4, res5)``
    (``_pyramid_inputs``): scores, pooled features and, in training, the auxiliary loss."""

    neck: TPN
    cls_head: I3DHead

    def _pyramid_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.neck(self._pyramid_inputs(x)))

    def forward(self, x: torch.Tensor, loss_fn: LossFn | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        if loss_fn is None:
            return self.predict(x)
        feats = self._pyramid_inputs(x)
        scores = self.cls_head(self.neck(feats))
        aux = self.neck.aux_head(feats[-2])
        return {"loss_cls": loss_fn(scores, "cls"), "loss_aux": self.neck.aux_head.loss_weight * loss_fn(aux, "aux")}


class TPNRecognizer(_Pyramid, Recognizer3D):
    """Backbone -> TPN neck -> pooled fc; in training also the auxiliary head's loss."""

    def __init__(self, backbone: nn.Module, neck: TPN, cls_head: I3DHead, meta: dict[str, Any]) -> None:
        super().__init__(backbone, cls_head, meta)
        self.neck = neck

    def _pyramid_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backbone(self._flatten(x))

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head.pool(self.neck(self._pyramid_inputs(x)))


class TPNTSMRecognizer(_Pyramid, Recognizer2D):
    """TSM backbone per frame -> segments folded into time -> TPN neck -> pooled fc, one row per view."""

    def __init__(self, backbone: nn.Module, neck: TPN, cls_head: I3DHead, meta: dict[str, Any]) -> None:
        super().__init__(backbone, cls_head, meta)   # type: ignore[arg-type]
        self.neck = neck

    def _pyramid_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, V*segments, 3, H, W]`` -> res4 / res5 as ``[N*V, C, segments, h, w]``."""
        self._check(x)
        n, s = x.shape[:2]
        segs = int(self.meta["num_segments"])
        if s % segs:
            raise ValueError(f"TPN-TSM needs whole groups of {segs} frames, got {s}")
        feats = self.backbone(x.reshape((n * s,) + x.shape[2:]))
        return tuple(f.reshape((-1, segs) + f.shape[1:]).transpose(1, 2).contiguous() for f in feats)  # type: ignore

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:                     # single images (de-duplication): the res5 map, pooled
            return self.backbone(x)[1].mean(dim=(2, 3))
        return self.cls_head.pool(self.neck(self._pyramid_inputs(x)))


def _build_tsm(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 50))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    aux_weight = float(opts.pop("aux_loss_weight", 0.5))
    segs = int(opts.pop("num_segments", preset.num_clips))
    shift_div = int(opts.pop("shift_div", 8))
    backbone = make_tsm(_ResNetRes45(depth=depth, base_channels=base_channels, in_channels=in_channels, **opts),
                        segs, shift_div)
    c5 = backbone.feat_dim
    neck = TPN((c5 // 2, c5), c5 // 2, num_classes, aux_weight=aux_weight)   # time pooled by 8, as the config
    head = I3DHead(num_classes, 2048, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout,
                num_segments=segs, shift_div=shift_div)
    return TPNTSMRecognizer(backbone, neck, head, meta)


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 50))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    aux_weight = float(opts.pop("aux_loss_weight", 0.5))
    backbone = _Backbone(depth=depth, arch="slowonly", base_channels=base_channels, in_channels=in_channels, **opts)
    c5 = backbone.feat_dim
    neck = TPN((c5 // 2, c5), c5 // 2, num_classes, aux_weight=aux_weight)
    head = I3DHead(num_classes, 2048, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout)
    return TPNRecognizer(backbone, neck, head, meta)


def _example(model: nn.Module, n: int) -> torch.Tensor:
    return torch.randn(n, 1, int(model.meta.get("in_channels", 3)), 8, 64, 64)


FAMILY = register_family(Family(
    name="tpn", layout="3d", build=_build,
    overrides=frozenset({"aux_loss_weight", "frozen_stages", "norm_eval"}),
    tiny={"base_channels": 16},
    example_input=_example,
    pretrained_state=imagenet_resnet_state, inflate=True,
    doc="TPN: temporal pyramid neck on SlowOnly-R50, auxiliary res4 head (mmaction2 TPN + TPNHead)",
))


FAMILY_TSM = register_family(Family(
    name="tpn_tsm", layout="2d", build=_build_tsm,
    overrides=frozenset({"aux_loss_weight", "num_segments", "shift_div", "frozen_stages", "norm_eval",
                         "partial_bn"}),
    tiny={"base_channels": 16},
    example_input=segment_group_input,
    pretrained_state=tsm_pretrained_state, inflate=False,
    doc="TPN on TSM-R50: the temporal pyramid neck over the segments of a shifted 2D ResNet",
))


def _row(name: str, mm: str, imagenet: bool, doc: str) -> ModelPreset:
    return ModelPreset(name=name, family="tpn", depth=50, num_classes=400, dataset="kinetics400", clip_len=8,
                       frame_interval=8, num_clips=1, epochs=150, train_preset="slowonly_8x8x1_train",
                       test_preset="slowonly_8x8x1_test", mmaction2_configs=(mm,), imagenet_pretrained=imagenet,
                       dropout=0.5, init_std=0.01, params=91_498_336, doc=doc)


# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    _row("tpn_imagenet_pretrained_slowonly_r50_8x8x1_150e_kinetics_rgb",
         "tpn-slowonly_imagenet-pretrained-r50_8xb8-8x8x1-150e_kinetics400-rgb", True,
         "TPN on SlowOnly-R50 8x8, ImageNet-inflated, Kinetics-400"),
    _row("tpn_slowonly_r50_8x8x1_150e_kinetics_rgb", "tpn-slowonly_r50_8xb8-8x8x1-150e_kinetics400-rgb", False,
         "TPN on SlowOnly-R50 8x8, from scratch, Kinetics-400"),
    ModelPreset(name="tpn_tsm_r50_1x1x8_150e_sthv1_rgb", family="tpn_tsm", depth=50, num_classes=174,
                dataset="sthv1", clip_len=1, frame_interval=1, num_clips=8, epochs=150,
                train_preset="tpn_tsm_sthv1_1x1x8_train", test_preset="tpn_tsm_sthv1_1x1x8_test",
                mmaction2_configs=("tpn-tsm_imagenet-pretrained-r50_8xb8-1x1x8-150e_sthv1-rgb",),
                imagenet_pretrained=True, dropout=0.5, init_std=0.01, params=82_445_724,
                doc="TPN on TSM-R50, 8 segments, Something-Something V1 (flip swaps left/right classes)"),
])
