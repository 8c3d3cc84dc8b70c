"""Model registry: ``create_model(name, num_classes=None, **overrides)`` and ``list_models()``.

timm-style: every preset is one small registered function named exactly like the mmaction2
0.x zoo config it reproduces (``tsn_r50_1x1x3_100e_kinetics400_rgb``, ...). The functions only
fill in a :class:`PresetSpec`; :func:`build_from_spec` turns a spec plus user overrides into a
recognizer. The mmaction2 1.x config names (``tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_
kinetics400-rgb``) are accepted as aliases.

Overrides (all optional):

==================  =========================================================================
num_classes         size of the classifier (also the second positional argument)
depth               ResNet depth: 18, 34, 50, 101, 152
base_channels       stem width (64 in real models; e.g. 8 for tiny test networks)
in_channels         input channels (3 for RGB)
dropout, init_std   head dropout ratio and fc init std
frozen_stages       freeze stem + ``layer1..layerK`` (-1: none)
norm_eval           keep BN layers in eval mode while training
partial_bn          TSN partial BN (2D only): freeze every BN but the first
pretrained          a *path* to backbone weights: torchvision / timm ResNet files (.pth or
                    .safetensors) or an mmaction2/omnisource checkpoint; 2D kernels are
                    inflated for 3D models. Never a URL: nothing is downloaded.
arch fields (3D)    any field of :class:`omnisource.models.resnet3d.Arch3D`, e.g. ``inflate``,
                    ``conv1_kernel``, ``with_pool2``
==================  =========================================================================
"""
from __future__ import annotations

import copy
import difflib
import fnmatch
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from torch import nn

from omnisource.errors import ConfigError
from omnisource.models.heads import I3DHead, TSNHead
from omnisource.models.recognizers import Recognizer2D, Recognizer3D
from omnisource.models.resnet import ResNet
from omnisource.models.resnet3d import Arch3D, ResNet3d

__all__ = ["PresetSpec", "create_model", "list_models", "get_preset_spec", "register_model",
           "build_from_spec", "IMAGENET_MEAN", "IMAGENET_STD"]

# mmaction2's ActionDataPreprocessor normalisation, on the 0..255 scale.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class PresetSpec:
    """Everything a preset fixes; overrides may change the model fields, not the recipe facts."""

    name: str
    arch: str                       # 'tsn' (2D) or a row of ARCHS_3D ('slowonly', 'i3d', 'c2d')
    depth: int
    num_classes: int
    dataset: str
    clip_len: int                   # frames per clip (1 for TSN)
    frame_interval: int
    num_clips: int                  # training clips / segments
    epochs: int
    train_preset: str               # names of omnisource.data.presets pipelines
    test_preset: str
    mmaction2_config: str           # the 1.x config this reproduces (0.x name where 1.x has none; '' if none)
    imagenet_pretrained: bool = False   # the recipe starts from ImageNet weights (pass pretrained=PATH)
    dropout: float = 0.5
    init_std: float = 0.01
    input_size: int = 224
    model: dict[str, Any] = field(default_factory=dict)  # default backbone overrides

    @property
    def layout(self) -> str:
        return "2d" if self.arch == "tsn" else "3d"


_REGISTRY: dict[str, Callable[[], PresetSpec]] = {}
_ALIASES: dict[str, str] = {}

_COMMON_OVERRIDES = {"depth", "base_channels", "in_channels", "dropout", "init_std",
                     "frozen_stages", "norm_eval", "pretrained"}
_2D_OVERRIDES = _COMMON_OVERRIDES | {"partial_bn"}
_3D_OVERRIDES = _COMMON_OVERRIDES | {f.name for f in fields(Arch3D) if f.name != "notes"}


def register_model(fn: Callable[[], PresetSpec]) -> Callable[[], PresetSpec]:
    """Decorator: register a preset function under its own name (and its 1.x alias)."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = fn
    spec = fn()
    if spec.name != name:
        raise ValueError(f"preset function {name} returns spec named {spec.name}")
    if spec.mmaction2_config:
        _ALIASES[spec.mmaction2_config] = name
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered preset names matching a shell-style ``pattern`` (sorted)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def _resolve_name(name: str) -> str:
    key = Path(name).name[:-3] if name.endswith(".py") else name
    if key in _REGISTRY:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    under = key.replace("-", "_")
    if under in _REGISTRY:
        return under
    close = difflib.get_close_matches(under, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; known models: {', '.join(list_models())}"
    raise ConfigError(f"unknown model {name!r}{hint}")


def get_preset_spec(name: str) -> PresetSpec:
    """The :class:`PresetSpec` of a registered preset (a fresh copy, safe to modify)."""
    return copy.deepcopy(_REGISTRY[_resolve_name(name)]())


def create_model(name: str, num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """Build the recognizer for preset ``name``.

    ``num_classes`` defaults to the preset's dataset (400 for Kinetics-400, 200 for
    Mini-Kinetics). See the module docstring for the accepted ``overrides``; unknown keys raise
    :class:`~omnisource.errors.ConfigError` naming the closest valid key.
    """
    spec = get_preset_spec(name)
    return build_from_spec(spec, num_classes=num_classes, **overrides)


def _check_overrides(spec: PresetSpec, overrides: dict[str, Any]) -> None:
    allowed = _2D_OVERRIDES if spec.layout == "2d" else _3D_OVERRIDES
    for key in overrides:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown override {key!r} for {spec.layout} model {spec.name}{hint} "
                              f"(valid: {', '.join(sorted(allowed))})")


def build_from_spec(spec: PresetSpec, num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """Build a recognizer from a spec and user overrides (see :func:`create_model`)."""
    _check_overrides(spec, overrides)
    opts = {**spec.model, **{k: v for k, v in overrides.items() if v is not None}}
    if "num_classes" in opts:  # tolerated when passed through **overrides by configs
        num_classes = opts.pop("num_classes") if num_classes is None else num_classes
    num_classes = spec.num_classes if num_classes is None else int(num_classes)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be positive, got {num_classes}")
    pretrained = opts.pop("pretrained", None)
    depth = int(opts.pop("depth", spec.depth))
    dropout = float(opts.pop("dropout", spec.dropout))
    init_std = float(opts.pop("init_std", spec.init_std))
    base_channels = int(opts.pop("base_channels", 64))
    in_channels = int(opts.pop("in_channels", 3))
    try:
        if spec.layout == "2d":
            backbone: nn.Module = ResNet(depth=depth, base_channels=base_channels, in_channels=in_channels, **opts)
            head: nn.Module = TSNHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
            cls = Recognizer2D
        else:
            backbone = ResNet3d(depth=depth, arch=spec.arch, base_channels=base_channels,
                                in_channels=in_channels, **opts)
            head = I3DHead(num_classes, backbone.feat_dim, dropout=dropout, init_std=init_std)
            cls = Recognizer3D
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {spec.name}: {err}") from None
    meta = {k: v for k, v in asdict(spec).items() if k not in ("model", "num_classes")}
    meta.update(
        depth=depth, base_channels=base_channels, in_channels=in_channels, dropout=dropout,
        mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), pretrained=None,
        overrides={k: (v if isinstance(v, (bool, int, float, str, list, tuple)) else str(v))
                   for k, v in overrides.items() if v is not None},
    )
    if spec.layout == "3d":
        meta["arch_row"] = {k: v for k, v in asdict(backbone.arch).items() if k != "notes"}
    model = cls(backbone, head, meta)
    if pretrained is not None:
        from omnisource.models.checkpoint import load_pretrained_backbone

        load_pretrained_backbone(model, pretrained)
        model.meta["pretrained"] = str(pretrained)
    return model


# --------------------------------------------------------------------------------------------
# Presets. Recipe facts (sampling, epochs, test protocol) follow the mmaction2 zoo configs; the
# YAML recipes in configs/ carry the full training / test settings.
# --------------------------------------------------------------------------------------------
def _tsn(name: str, depth: int, segs: int, dataset: str, classes: int, epochs: int, cfg: str,
         test_preset: str | None = None) -> PresetSpec:
    return PresetSpec(
        name=name, arch="tsn", depth=depth, num_classes=classes, dataset=dataset, clip_len=1,
        frame_interval=1, num_clips=segs, epochs=epochs, train_preset=f"tsn_1x1x{segs}_train",
        test_preset=test_preset or f"tsn_1x1x{segs}_test", mmaction2_config=cfg,
        imagenet_pretrained=True, dropout=0.4, init_std=0.01,
    )


def _slowonly(name: str, depth: int, clip_len: int, interval: int, dataset: str, classes: int,
              epochs: int, cfg: str, imagenet: bool) -> PresetSpec:
    sampling = f"{clip_len}x{interval}x1"
    return PresetSpec(
        name=name, arch="slowonly", depth=depth, num_classes=classes, dataset=dataset,
        clip_len=clip_len, frame_interval=interval, num_clips=1, epochs=epochs,
        train_preset=f"slowonly_{sampling}_train", test_preset=f"slowonly_{sampling}_test",
        mmaction2_config=cfg, imagenet_pretrained=imagenet, dropout=0.5, init_std=0.01,
    )


@register_model
def tsn_r50_1x1x3_100e_kinetics400_rgb() -> PresetSpec:
    """TSN ResNet-50, 3 segments, Kinetics-400 (ImageNet-pretrained backbone)."""
    return _tsn("tsn_r50_1x1x3_100e_kinetics400_rgb", 50, 3, "kinetics400", 400, 100,
                "tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb")


@register_model
def tsn_r50_1x1x8_100e_kinetics400_rgb() -> PresetSpec:
    """TSN ResNet-50, 8 segments, Kinetics-400."""
    return _tsn("tsn_r50_1x1x8_100e_kinetics400_rgb", 50, 8, "kinetics400", 400, 100,
                "tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb")


@register_model
def tsn_r50_1x1x8_100e_minikinetics_rgb() -> PresetSpec:
    """TSN ResNet-50, 8 segments, Mini-Kinetics (200 classes): the OmniSource paper's 2D model."""
    return _tsn("tsn_r50_1x1x8_100e_minikinetics_rgb", 50, 8, "minikinetics", 200, 100,
                "tsn_r50_1x1x8_100e_minikinetics_rgb")


@register_model
def tsn_r18_1x1x3_100e_kinetics400_rgb() -> PresetSpec:
    """TSN ResNet-18, 3 segments (a cheap extra; not in the mmaction2 zoo)."""
    return _tsn("tsn_r18_1x1x3_100e_kinetics400_rgb", 18, 3, "kinetics400", 400, 100, "")


@register_model
def tsn_r101_1x1x8_100e_kinetics400_rgb() -> PresetSpec:
    """TSN ResNet-101, 8 segments, Kinetics-400."""
    return _tsn("tsn_r101_1x1x8_100e_kinetics400_rgb", 101, 8, "kinetics400", 400, 100,
                "tsn_imagenet-pretrained-r101_8xb32-1x1x8-100e_kinetics400-rgb")


@register_model
def slowonly_r50_4x16x1_256e_kinetics400_rgb() -> PresetSpec:
    """SlowOnly ResNet-50 4x16, trained from scratch on Kinetics-400."""
    return _slowonly("slowonly_r50_4x16x1_256e_kinetics400_rgb", 50, 4, 16, "kinetics400", 400, 256,
                     "slowonly_r50_8xb16-4x16x1-256e_kinetics400-rgb", imagenet=False)


@register_model
def slowonly_r50_8x8x1_256e_kinetics400_rgb() -> PresetSpec:
    """SlowOnly ResNet-50 8x8, from scratch, Kinetics-400."""
    return _slowonly("slowonly_r50_8x8x1_256e_kinetics400_rgb", 50, 8, 8, "kinetics400", 400, 256,
                     "slowonly_r50_8xb16-8x8x1-256e_kinetics400-rgb", imagenet=False)


@register_model
def slowonly_r50_8x8x1_256e_minikinetics_rgb() -> PresetSpec:
    """SlowOnly ResNet-50 8x8, Mini-Kinetics (200 classes): the OmniSource paper's 3D model."""
    return _slowonly("slowonly_r50_8x8x1_256e_minikinetics_rgb", 50, 8, 8, "minikinetics", 200, 256,
                     "slowonly_r50_8x8x1_256e_minikinetics_rgb", imagenet=False)


@register_model
def slowonly_r101_8x8x1_196e_kinetics400_rgb() -> PresetSpec:
    """SlowOnly ResNet-101 8x8, from scratch, Kinetics-400."""
    return _slowonly("slowonly_r101_8x8x1_196e_kinetics400_rgb", 101, 8, 8, "kinetics400", 400, 196,
                     "slowonly_r101_8xb16-8x8x1-196e_kinetics400-rgb", imagenet=False)


@register_model
def slowonly_imagenet_pretrained_r50_4x16x1_150e_kinetics400_rgb() -> PresetSpec:
    """SlowOnly ResNet-50 4x16 from inflated ImageNet weights (pass ``pretrained=PATH``)."""
    return _slowonly("slowonly_imagenet_pretrained_r50_4x16x1_150e_kinetics400_rgb", 50, 4, 16,
                     "kinetics400", 400, 150,
                     "slowonly_imagenet-pretrained-r50_8xb16-4x16x1-steplr-150e_kinetics400-rgb", imagenet=True)


@register_model
def slowonly_imagenet_pretrained_r50_8x8x1_150e_kinetics400_rgb() -> PresetSpec:
    """SlowOnly ResNet-50 8x8 from inflated ImageNet weights (pass ``pretrained=PATH``)."""
    return _slowonly("slowonly_imagenet_pretrained_r50_8x8x1_150e_kinetics400_rgb", 50, 8, 8,
                     "kinetics400", 400, 150,
                     "slowonly_imagenet-pretrained-r50_8xb16-8x8x1-steplr-150e_kinetics400-rgb", imagenet=True)


@register_model
def i3d_r50_32x2x1_100e_kinetics400_rgb() -> PresetSpec:
    """I3D ResNet-50 32x2 (mmaction2 i3d_r50.py row of the 3D table), ImageNet-inflated."""
    return PresetSpec(
        name="i3d_r50_32x2x1_100e_kinetics400_rgb", arch="i3d", depth=50, num_classes=400,
        dataset="kinetics400", clip_len=32, frame_interval=2, num_clips=1, epochs=100,
        train_preset="i3d_32x2x1_train", test_preset="i3d_32x2x1_test",
        mmaction2_config="i3d_imagenet-pretrained-r50_8xb8-32x2x1-100e_kinetics400-rgb",
        imagenet_pretrained=True, dropout=0.5, init_std=0.01,
    )


@register_model
def c2d_r50_8x8x1_100e_kinetics400_rgb() -> PresetSpec:
    """C2D ResNet-50 8x8 (2D kernels, one temporal pool after res2), ImageNet-pretrained."""
    return PresetSpec(
        name="c2d_r50_8x8x1_100e_kinetics400_rgb", arch="c2d", depth=50, num_classes=400,
        dataset="kinetics400", clip_len=8, frame_interval=8, num_clips=1, epochs=100,
        train_preset="c2d_8x8x1_train", test_preset="c2d_8x8x1_test",
        mmaction2_config="c2d_r50-in1k-pre_8xb32-8x8x1-100e_kinetics400-rgb",
        imagenet_pretrained=True, dropout=0.5, init_std=0.01,
    )


# The demo world's tiny networks are zoo presets too (teachers build their scoring views from
# model.meta), so `omnisource filter --teacher <run config>` finds them without importing the
# pipeline first. Imported last: that module registers through this one.
from omnisource.pipeline import tiny_models as _tiny_models  # noqa: E402,F401
