"""TRN family (Zhou et al. 2018, "Temporal Relational Reasoning in Videos"): a 2D ResNet per
segment, then a multi-scale relation head that scores ordered tuples of segment features.

Family ``trn``, input contract ``'2d'`` (whole groups of ``num_segments`` frames). As mmaction2's
``TRNHead(relation_type='TRNMultiScale')`` on a partial-BN ResNet-50: ``fc_cls`` maps each
segment's pooled feature to 256 dims; for every tuple size ``k`` from ``num_segments`` down to 2,
an MLP (``consensus.fc_fusion_scales.<i>``: ReLU, Linear(k * 256, 256), ReLU, Linear(256, classes))
scores the segment tuples in temporal order, and the scores add up. All 8-tuples (one) are
scored; of smaller sizes, 3 random tuples -- drawn with ``numpy.random.choice`` in mmaction2's
order, so the same numpy seed gives the same tuples, and scores, as mmaction2 (test time too:
TRN's test scores are random unless the seed is fixed). ``relation_type='TRN'`` is the
single-scale head.

Overrides: ``num_segments``, ``relation_type``, ``hidden_dim`` and the 2D ResNet's.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import nn

from omnisource.models.recognizers import Recognizer2D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets
from omnisource.models.resnet import ResNet, imagenet_resnet_state
from omnisource.models.tsm import segment_group_input

__all__ = ["RelationModule", "RelationModuleMultiScale", "TRNHead", "FAMILY", "ROWS"]


def _mlp(cin: int, bottleneck: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Linear(cin, bottleneck), nn.ReLU(), nn.Linear(bottleneck, classes))


class RelationModule(nn.Module):
    """Single-scale relation: one MLP over all segments, concatenated in order."""

    def __init__(self, hidden_dim: int, num_segments: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = _mlp(num_segments * hidden_dim, 512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.reshape(x.shape[0], -1))


class RelationModuleMultiScale(nn.Module):
    """Relations of every tuple size; at most 3 random tuples per size below the full one."""

    def __init__(self, hidden_dim: int, num_segments: int, num_classes: int, max_subsample: int = 3) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.scales = list(range(num_segments, 1, -1))
        self.relations = [list(itertools.combinations(range(num_segments), k)) for k in self.scales]
        self.subsample = [min(max_subsample, len(r)) for r in self.relations]
        self.fc_fusion_scales = nn.ModuleList(_mlp(k * hidden_dim, 256, num_classes) for k in self.scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = self.fc_fusion_scales[0](x[:, list(self.relations[0][0])].reshape(n, -1))
        for i in range(1, len(self.scales)):
            # numpy's global generator, called as mmaction2 calls it (same seed, same tuples)
            for j in np.random.choice(len(self.relations[i]), self.subsample[i], replace=False):
                out = out + self.fc_fusion_scales[i](x[:, list(self.relations[i][j])].reshape(n, -1))
        return out


class TRNHead(nn.Module):
    """Pool, dropout, ``fc_cls`` to ``hidden_dim`` per segment, then the relation module per group."""

    def __init__(self, num_classes: int, in_channels: int, num_segments: int = 8, relation_type: str = "TRNMultiScale",
                 hidden_dim: int = 256, dropout: float = 0.8, init_std: float = 0.001) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.num_segments = num_classes, in_channels, num_segments
        self.init_std = init_std
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.fc_cls = nn.Linear(in_channels, hidden_dim)
        if relation_type == "TRN":
            self.consensus: nn.Module = RelationModule(hidden_dim, num_segments, num_classes)
        elif relation_type == "TRNMultiScale":
            self.consensus = RelationModuleMultiScale(hidden_dim, num_segments, num_classes)
        else:
            raise ValueError(f"relation_type must be 'TRN' or 'TRNMultiScale', got {relation_type!r}")
        self.init_weights()

    def init_weights(self) -> None:
        """N(0, init_std) ``fc_cls``; the relation MLPs keep torch's default init (as mmaction2)."""
        nn.init.normal_(self.fc_cls.weight, std=self.init_std)
        nn.init.zeros_(self.fc_cls.bias)

    def pool(self, x: torch.Tensor, num_segs: int) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x.reshape(-1, num_segs, x.shape[1]).mean(dim=1)

    def forward(self, x: torch.Tensor, num_segs: int) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        if self.dropout is not None:
            x = self.dropout(x)
        x = self.fc_cls(x)
        return self.consensus(x.view(-1, self.num_segments, x.shape[-1]))


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    depth = int(opts.pop("depth", preset.depth or 50))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    segs = int(opts.pop("num_segments", preset.num_clips))
    relation = str(opts.pop("relation_type", "TRNMultiScale"))
    hidden = int(opts.pop("hidden_dim", 256))
    opts.setdefault("partial_bn", True)
    backbone = ResNet(depth=depth, base_channels=base_channels, in_channels=in_channels, **opts)
    head = TRNHead(num_classes, backbone.feat_dim, segs, relation, hidden, dropout=dropout, init_std=init_std)
    meta.update(depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout,
                num_segments=segs, relation_type=relation)
    return Recognizer2D(backbone, head, meta)  # type: ignore[arg-type]



FAMILY = register_family(Family(
    name="trn", layout="2d", build=_build,
    overrides=frozenset({"num_segments", "relation_type", "hidden_dim", "frozen_stages", "norm_eval", "partial_bn"}),
    tiny={"base_channels": 8, "hidden_dim": 16},
    example_input=segment_group_input,
    pretrained_state=imagenet_resnet_state, inflate=False,
    doc="TRN: 2D ResNet + multi-scale temporal relation head (mmaction2 ResNet + TRNHead)",
))


def _row(name: str, mm: str, dataset: str, preset: str, doc: str) -> ModelPreset:
    return ModelPreset(name=name, family="trn", depth=50, num_classes=174, dataset=dataset, clip_len=1,
                       frame_interval=1, num_clips=8, epochs=50, train_preset=f"{preset}_train",
                       test_preset=f"{preset}_test", mmaction2_configs=(mm,), imagenet_pretrained=True,
                       dropout=0.8, init_std=0.001, params=26_641_154, doc=doc)


# parameter counts: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    _row("trn_r50_1x1x8_50e_sthv1_rgb", "trn_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv1-rgb", "sthv1",
         "trn_sthv1_1x1x8", "TRN ResNet-50 (multi-scale relations), 8 segments, Something-Something V1"),
    _row("trn_r50_1x1x8_50e_sthv2_rgb", "trn_imagenet-pretrained-r50_8xb16-1x1x8-50e_sthv2-rgb", "sthv2",
         "tsm_sthv2_1x1x8", "TRN ResNet-50 (multi-scale relations), 8 segments, Something-Something V2"),
])
