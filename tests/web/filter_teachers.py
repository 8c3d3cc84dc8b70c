"""Test teachers for the filter tests, in a module of their own so that the 2-rank
subprocesses can import the very same code."""

from __future__ import annotations

import torch
from torch import nn


class ColourTeacher(nn.Module):
    """class c = dominant RGB channel; confidence grows with saturation (recognizer API)."""

    def __init__(self, layout="2d", scale=8.0):
        super().__init__()
        self.scale = scale
        self.meta = {"layout": layout, "num_classes": 3, "input_size": 32, "clip_len": 2,
                     "frame_interval": 1, "mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}
        self.num_classes = 3

    def forward(self, x):
        if self.meta["layout"] == "2d":          # [N, S, 3, H, W] -> [N, C]
            m = x.mean(dim=(3, 4)).mean(1)
        else:                                    # [N, V, 3, T, H, W] -> [N*V, C]
            x = x.reshape((-1,) + x.shape[-4:])
            m = x.mean(dim=(2, 3, 4))
        return self.scale * (m - m.mean(1, keepdim=True)) * 3


def tiny_cnn():
    """A real (tiny, seeded) ResNet teacher: its scores depend on batch composition unless the
    ensemble runs fixed-size batches, which is what this test checks."""
    from omnisource.models import create_model

    torch.manual_seed(0)
    m = create_model("tsn_r18_1x1x3_100e_kinetics400_rgb", num_classes=3, base_channels=8).eval()
    m.meta["input_size"] = 64
    return m
