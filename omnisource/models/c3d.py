"""C3D family (Tran et al. 2015, "Learning Spatiotemporal Features with 3D Convolutional
Networks"): eight 3x3x3 convolutions without BatchNorm, five max-pools and two 4096-wide fully
connected layers, on 16-frame clips at 112 x 112 (the Sports-1M layout mmaction2 converts).

Family ``c3d``, input contract ``'3d'`` (the flattening ``fc6`` needs 16 x 112 x 112 clips; other
sizes are a clear error, not a shape mismatch deep in torch). Keys equal mmaction2's ``C3D`` +
``I3DHead(spatial_type=None)`` (``conv1a.conv.{weight,bias}`` ... ``fc6``, ``fc7``,
``cls_head.fc_cls``). Normalisation: mean (104, 117, 128), std 1, as its config. Overrides:
``dropout`` (head), ``backbone_dropout`` (between fc6 and fc7), ``init_std`` and the common ones.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from omnisource.models.heads import I3DHead
from omnisource.models.layers import ConvBN
from omnisource.models.recognizers import Recognizer3D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets

__all__ = ["C3D", "FAMILY", "ROWS"]


class C3D(nn.Module):
    """The C3D backbone: ``[N, 3, 16, 112, 112]`` -> fc7 features ``[N, 4096]``."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, fc_dim: int = 4096, dropout: float = 0.5,
                 init_std: float = 0.005, clip_len: int = 16, size: int = 112) -> None:
        super().__init__()
        c = base_channels
        widths = {"conv1a": (in_channels, c), "conv2a": (c, 2 * c), "conv3a": (2 * c, 4 * c),
                  "conv3b": (4 * c, 4 * c), "conv4a": (4 * c, 8 * c), "conv4b": (8 * c, 8 * c),
                  "conv5a": (8 * c, 8 * c), "conv5b": (8 * c, 8 * c)}
        for name, (cin, cout) in widths.items():
            self.add_module(name, ConvBN(cin, cout, 3, padding=1, dims=3, norm=False))
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.pool2 = nn.MaxPool3d((2, 2, 2), (2, 2, 2))
        self.pool3 = nn.MaxPool3d((2, 2, 2), (2, 2, 2))
        self.pool4 = nn.MaxPool3d((2, 2, 2), (2, 2, 2))
        self.pool5 = nn.MaxPool3d((2, 2, 2), (2, 2, 2), padding=(0, 1, 1))
        self.out_shape = self._out_shape(8 * c, clip_len, size)
        self.fc6 = nn.Linear(math.prod(self.out_shape), fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p=dropout)
        self.feat_dim = fc_dim
        self.init_std = init_std
        self.init_weights()

    @staticmethod
    def _out_shape(channels: int, t: int, s: int) -> tuple[int, int, int, int]:
        for kt in (1, 2, 2, 2):
            t, s = t // kt, s // 2
        t, s = t // 2, (s + 2) // 2        # pool5 pads H and W by one
        return (channels, t, s, s)

    def init_weights(self) -> None:
        """mmaction2's from-scratch init: Kaiming convs, N(0, init_std) linear layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=self.init_std)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1a(x))
        x = self.pool2(self.conv2a(x))
        x = self.pool3(self.conv3b(self.conv3a(x)))
        x = self.pool4(self.conv4b(self.conv4a(x)))
        x = self.pool5(self.conv5b(self.conv5a(x)))
        if tuple(x.shape[1:]) != self.out_shape:
            raise ValueError(f"C3D expects clips giving {self.out_shape} before fc6 (16 x 112 x 112 inputs "
                             f"for the zoo model), got {tuple(x.shape[1:])} from input of this size")
        x = self.relu(self.fc6(x.flatten(1)))
        x = self.dropout(x)
        return self.relu(self.fc7(x))


class _FlatHead(I3DHead):
    """I3DHead with ``spatial_type=None``: the backbone already returns ``[N, C]`` features."""

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    fc_dim = int(opts.pop("fc_dim", 4096))
    size = int(opts.pop("input_size", preset.input_size))
    backbone = C3D(in_channels, base_channels, fc_dim, float(opts.pop("backbone_dropout", 0.5)),
                   float(opts.pop("backbone_init_std", 0.005)), preset.clip_len, size)
    if opts:
        raise ValueError(f"unknown C3D options {sorted(opts)}")
    head = _FlatHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
    meta.update(base_channels=base_channels, in_channels=in_channels, dropout=dropout, input_size=size)
    return Recognizer3D(backbone, head, meta)


def _example(model: nn.Module, n: int) -> torch.Tensor:
    s = int(model.meta.get("input_size", 112))
    return torch.randn(n, 1, int(model.meta.get("in_channels", 3)), int(model.meta.get("clip_len", 16)), s, s)


FAMILY = register_family(Family(
    name="c3d", layout="3d", build=_build,
    overrides=frozenset({"fc_dim", "input_size", "backbone_dropout", "backbone_init_std"}),
    tiny={"base_channels": 4, "fc_dim": 32, "input_size": 32},
    example_input=_example,
    doc="C3D: plain 3x3x3 convolutions and two fully connected layers (mmaction2 C3D + I3DHead)",
))

# parameter count: mmaction2 1.2.0, MODELS.build(cfg.model) (../shared/tools/mmaction2-reference)
ROWS = register_presets([
    ModelPreset(name="c3d_sports1m_16x1x1_45e_ucf101_rgb", family="c3d", num_classes=101, dataset="ucf101",
                clip_len=16, frame_interval=1, num_clips=1, epochs=45, train_preset="c3d_16x1x1_train",
                test_preset="c3d_16x1x1_test",
                mmaction2_configs=("c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb",),
                dropout=0.5, init_std=0.01, input_size=112, mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0),
                params=78_409_573, doc="C3D 16x1 on UCF101 split 1 from Sports-1M weights (pass pretrained=PATH)"),
])
