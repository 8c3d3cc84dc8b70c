"""Recognizers as family plug-ins, the model registry and checkpoint loading.

Public API (kept stable)::

    from omnisource.models import create_model, list_models, load_checkpoint
    model = create_model("tsn_r50_1x1x3_100e_kinetics400_rgb", num_classes=400)
    load_checkpoint(model, "tsn_r50.pth")          # mmaction2 0.x / 1.x or omnisource
    scores = model(x)                              # 2D [N, S, 3, H, W] -> [N, C]

Families register themselves when their module is imported; :data:`FAMILY_MODULES` lists the
modules imported here (adding a family = adding its file and its name to that tuple).
See docs/models.md ("Adding a family").
"""
from __future__ import annotations

import importlib

from omnisource.models.checkpoint import (
    LoadReport,
    extract_state_dict,
    load_checkpoint,
    load_pretrained_backbone,
    read_checkpoint_file,
)
from omnisource.models.heads import I3DHead, TSNHead
from omnisource.models.recognizers import Recognizer2D, Recognizer3D
from omnisource.models.registry import (
    Family,
    ModelPreset,
    create_model,
    example_input,
    family_of,
    get_family,
    get_model_preset,
    list_families,
    list_models,
    missing_requirements,
    preset_module,
    register_family,
    register_presets,
    resolve_name,
)
from omnisource.models.resnet import ResNet

# the family modules (each registers its family and its zoo rows), then the demo's tiny rows
FAMILY_MODULES = ("omnisource.models.tsn", "omnisource.models.tsm", "omnisource.models.tin", "omnisource.models.trn", "omnisource.models.tanet", "omnisource.models.resnet3d", "omnisource.models.slowfast",
                  "omnisource.models.r2plus1d", "omnisource.models.csn", "omnisource.models.c3d",
                  "omnisource.models.x3d", "omnisource.models.timesformer", "omnisource.models.tpn", "omnisource.models.audio", "omnisource.models.tsn_custom", "omnisource.models.tsn_timm", "omnisource.models.mobileone",
                  "omnisource.models.tiny")
for _mod in FAMILY_MODULES:
    importlib.import_module(_mod)

from omnisource.models.resnet3d import ARCHS_3D, Arch3D, ResNet3d  # noqa: E402

__all__ = [
    "create_model", "list_models", "list_families", "load_checkpoint", "get_model_preset", "get_family",
    "register_family", "register_presets", "resolve_name", "preset_module", "family_of", "example_input",
    "missing_requirements",
    "Family", "ModelPreset", "LoadReport", "load_pretrained_backbone", "read_checkpoint_file",
    "extract_state_dict", "ResNet", "ResNet3d", "Arch3D", "ARCHS_3D", "TSNHead", "I3DHead",
    "Recognizer2D", "Recognizer3D", "FAMILY_MODULES",
]
