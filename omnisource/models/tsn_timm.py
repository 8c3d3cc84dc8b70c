"""TSN on any timm image model (the ``timm`` extra): the zoo's Swin-B rows and the paper's
TSN-EfficientNet-B4 teacher.

Family ``tsn_timm``, input contract ``'2d'``. As mmaction2's Recognizer2D with a ``timm.``
backbone: ``timm.create_model(name, num_classes=0)`` (no classifier), ``forward_features`` per
frame, then a global average of the feature map (``feature_shape``: ``NCHW`` for CNNs, ``NHWC``
for timm's Swin, ``NLC`` token sequences, detected from the output when not set), average
consensus over segments and ``TSNHead``'s fc. Keys are ``backbone.<timm's names>`` and
``cls_head.fc_cls.*``, mmaction2's, so its checkpoints of these rows load.

``timm_model`` (override) picks the network: ``swin_base_patch4_window7_224`` for the zoo rows,
``efficientnet_b4`` (or ``tf_efficientnet_b4``) for the paper's teacher, any other timm name for
a custom row. Weights never download: ``pretrained=FILE`` takes a timm / ImageNet state dict on
disk (``pretrained_state`` strips the classifier).

Why this family is optional: timm needs torchvision, and the package registry's torchvision is a
CUDA build that pulls its own torch (about 6 GB; it runs on the CPU) -- so ``pip install
'omnisource[timm]'`` is kept out of the default install and CI. Without timm the rows are
registered (names resolve, recipes exist) and building one says what to install; their tests
skip, saying why.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from omnisource.errors import ConfigError
from omnisource.models.heads import TSNHead
from omnisource.models.recognizers import Recognizer2D
from omnisource.models.registry import Family, ModelPreset, register_family, register_presets

__all__ = ["TimmRecognizer2D", "pool_features", "timm_available", "FAMILY", "ROWS"]

INSTALL_HINT = "pip install 'omnisource[timm]' (brings timm and torchvision)"


def timm_available() -> bool:
    return importlib.util.find_spec("timm") is not None


def pool_features(f: torch.Tensor, feature_shape: str | None) -> torch.Tensor:
    """mmaction2's pooling of a timm ``forward_features`` output: the mean over the spatial
    positions (``NCHW`` / ``NHWC``) or over every token (``NLC``), as ``[N, C, 1, 1]``."""
    shape = feature_shape or ("NLC" if f.dim() == 3 else "NCHW")
    if shape == "NHWC":
        f = f.mean(dim=(1, 2))
    elif shape == "NCHW":
        f = f.mean(dim=(2, 3))
    elif shape == "NLC":
        f = f.mean(dim=1)
    else:
        raise ConfigError(f"feature_shape must be NCHW, NHWC or NLC, got {feature_shape!r}")
    return f.reshape(f.shape[0], -1, 1, 1)


class TimmRecognizer2D(Recognizer2D):
    """``backbone`` is the timm model itself (keys ``backbone.<timm names>``, mmaction2's);
    frames go through ``forward_features`` and :func:`pool_features`, then TSN's head."""

    def __init__(self, backbone: nn.Module, cls_head: TSNHead, meta: dict[str, Any],
                 feature_shape: str | None = None) -> None:
        super().__init__(backbone, cls_head, meta)
        self.feature_shape = feature_shape

    @property
    def feat_dim(self) -> int:
        return int(self.backbone.num_features)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        return pool_features(self.backbone.forward_features(x), self.feature_shape)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        n, s = x.shape[:2]
        return self.cls_head(self._frames(x.reshape((n * s,) + x.shape[2:])), num_segs=s)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self._frames(x).flatten(1)
        self._check(x)
        n, s = x.shape[:2]
        return self.cls_head.pool(self._frames(x.reshape((n * s,) + x.shape[2:])), s)


def _build(preset: ModelPreset, num_classes: int, opts: dict[str, Any], meta: dict[str, Any]) -> nn.Module:
    if not timm_available():
        raise ConfigError(f"model {preset.name} needs timm: {INSTALL_HINT}")
    import timm

    name = str(opts.pop("timm_model", preset.model.get("timm_model")))
    feature_shape = opts.pop("feature_shape", preset.model.get("feature_shape"))
    dropout = float(opts.pop("dropout", preset.dropout))
    init_std = float(opts.pop("init_std", preset.init_std))
    in_channels = int(opts.pop("in_channels", 3))
    kw = {k: opts.pop(k) for k in list(opts) if k in _TIMM_KWARGS}
    if opts:
        raise ValueError(f"options {sorted(opts)} do not apply to a timm backbone")
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kw)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ConfigError(f"timm cannot build {name!r}: {err}") from None
    head = TSNHead(num_classes, int(net.num_features), dropout=dropout, init_std=init_std)
    meta.update(in_channels=in_channels, dropout=dropout, timm_model=name, feature_shape=feature_shape)
    return TimmRecognizer2D(net, head, meta, feature_shape)


_TIMM_KWARGS = ("img_size", "drop_path_rate", "embed_dim", "depths", "num_heads")


def _pretrained_state(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """A timm ImageNet file: its own names, without the classifier."""
    out = {}
    for k, v in sd.items():
        k = k[len("backbone."):] if k.startswith("backbone.") else k
        if k.startswith(("head.fc.", "fc.", "classifier.", "head.weight", "head.bias")):
            continue
        out[k] = v
    return out, "timm"


def _example(model: nn.Module, n: int) -> torch.Tensor:
    return torch.randn(n, 2, int(model.meta.get("in_channels", 3)), 64, 64)


FAMILY = register_family(Family(
    name="tsn_timm", layout="2d", build=_build,
    overrides=frozenset({"timm_model", "feature_shape", *_TIMM_KWARGS}),
    tiny={"timm_model": "resnet18", "feature_shape": "NCHW"},
    example_input=_example, requires=("timm",),
    pretrained_state=_pretrained_state, inflate=False,
    doc="TSN on a timm image model (Swin-B, EfficientNet-B4, ...): the `timm` extra",
))


def _row(name: str, mm: tuple[str, ...], timm_model: str, segs: int, params: int | None, doc: str, *,
         epochs: int = 100, feature_shape: str | None = None, preset: str | None = None,
         recipe: bool = True) -> ModelPreset:
    pre = preset or f"tsn_1x1x{segs}"
    return ModelPreset(name=name, family="tsn_timm", num_classes=400, dataset="kinetics400", clip_len=1,
                       frame_interval=1, num_clips=segs, epochs=epochs, train_preset=f"{pre}_train",
                       test_preset=f"{pre}_test", mmaction2_configs=mm, imagenet_pretrained=True, dropout=0.4,
                       init_std=0.01, params=params, doc=doc, recipe=recipe,
                       model={"timm_model": timm_model, "feature_shape": feature_shape})


# parameter counts: mmaction2 1.2.0's MODELS.build(cfg.model) with timm 1.0.31 + torch 2.14 installed beside it
# (a separate venv; pretrained=False); its class scores equal ours exactly on the same weights and input
ROWS = register_presets([
    _row("tsn_swin_transformer_video_320p_1x1x3_100e_kinetics400_rgb",
         ("tsn_imagenet-pretrained-swin-transformer_8xb32-1x1x3-100e_kinetics400-rgb",),
         "swin_base_patch4_window7_224", 3, 87_153_224, "TSN Swin-B (timm), 3 segments, Kinetics-400",
         feature_shape="NHWC"),
    _row("tsn_swin_transformer_1x1x8_50e_kinetics400_rgb",
         ("tsn_imagenet-pretrained-swin-transformer_32xb8-1x1x8-50e_kinetics400-rgb",),
         "swin_base_patch4_window7_224", 8, 87_153_224,
         "TSN Swin-B (timm), 8 segments, 50 epochs, Kinetics-400 (feature_shape NHWC: mmaction2's config omits it "
         "and then fails with timm 1.x, whose Swin returns NHWC maps)",
         epochs=50, feature_shape="NHWC"),
    _row("tsn_efficientnet_b4_1x1x3_100e_kinetics400_rgb", (), "efficientnet_b4", 3, None,
         "TSN EfficientNet-B4 (timm): the paper's 2D teacher (OmniSource Table 3); not an mmaction2 row"),
])
