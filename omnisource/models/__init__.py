"""Recognizers (TSN, SlowOnly, I3D, C2D), the model zoo and checkpoint loading.

Public API (kept stable)::

    from omnisource.models import create_model, list_models, load_checkpoint
    model = create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", num_classes=400)
    load_checkpoint(model, "tsn_r50.pth")          # mmaction2 0.x / 1.x or omnisource
    scores = model(x)                              # 2D [N, S, 3, H, W] -> [N, C]
"""
from __future__ import annotations

from omnisource.models.checkpoint import (
    LoadReport,
    extract_state_dict,
    load_checkpoint,
    load_pretrained_backbone,
    read_checkpoint_file,
)
from omnisource.models.heads import I3DHead, TSNHead
from omnisource.models.recognizers import Recognizer2D, Recognizer3D
from omnisource.models.resnet import ResNet
from omnisource.models.resnet3d import ARCHS_3D, Arch3D, ResNet3d
from omnisource.models.zoo import (
    PresetSpec,
    build_from_spec,
    create_model,
    get_preset_spec,
    list_models,
    register_model,
)

__all__ = [
    "create_model", "list_models", "load_checkpoint", "get_preset_spec", "register_model",
    "build_from_spec", "PresetSpec", "LoadReport", "load_pretrained_backbone", "read_checkpoint_file",
    "extract_state_dict", "ResNet", "ResNet3d", "Arch3D", "ARCHS_3D", "TSNHead", "I3DHead",
    "Recognizer2D", "Recognizer3D",
]
