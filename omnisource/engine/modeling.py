"""The one model factory of the engine: a config -> a recognizer, and how it is run.

Why a module of its own: ``train`` and ``evaluate`` both build models (and used to import each
other for it), the web teachers had a second factory. Everything that turns a config into a
model on a device lives here: :func:`build_model` (``create_model`` + pretrained weights),
:func:`load_config_and_model` (test / predict / bench-infer / teachers), the memory-format and
autocast choices, and the small model queries the trainer needs. It imports no other engine
module that imports it back.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import nn

from omnisource.config import Config
from omnisource.errors import ConfigError

log = logging.getLogger("omnisource.engine")

__all__ = ["build_model", "load_config_and_model", "model_layout", "model_num_classes", "use_channels_last",
           "apply_memory_format", "autocast_context"]


def autocast_context(device: torch.device, amp: str):
    """``torch.autocast`` for ``amp`` in {'none', 'bf16', 'fp16'} on ``device``."""
    if amp in (None, "none"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_model(cfg: Config) -> nn.Module:
    """``create_model(cfg.model.name, ...)`` plus optional pretrained weights: the one model
    factory of train, test, predict, bench-infer, the web teachers and the pipeline."""
    from omnisource import models

    if not cfg.model.name:
        raise ConfigError("'model.name' is required", file=cfg.get("_source"))
    try:
        model = models.create_model(cfg.model.name, num_classes=cfg.model.num_classes,
                                    **dict(cfg.model.overrides))
    except KeyError as err:
        raise ConfigError(f"unknown model {cfg.model.name!r}: {err}", file=cfg.get("_source")) from None
    if cfg.model.pretrained:
        models.load_checkpoint(model, cfg.model.pretrained, strict=True,
                               reset_head=cfg.model.reset_head)
    return model


def load_config_and_model(config: str, checkpoint: str | None, *, sets=None, device: str | None = None,
                          fuse_conv_bn: bool = False, channels_last: Any = None):
    """(cfg, model on device in eval mode) for test / predict / bench-infer; ``fuse_conv_bn``
    folds the BatchNorms into their convolutions (:mod:`omnisource.models.fusion`);
    ``channels_last`` overrides ``train.channels_last`` (auto | True | False). What was done is
    recorded in ``model.meta`` (``fused_conv_bn``, ``channels_last``) for the commands to report."""
    from omnisource.config import load_config

    cfg = load_config(config, sets)
    if checkpoint:
        # the checkpoint has every weight: don't require the recipe's initialisation files
        cfg.model.pretrained = None
        cfg.model.overrides.pop("pretrained", None)
    model = build_model(cfg)
    if checkpoint:
        from omnisource.models import load_checkpoint

        load_checkpoint(model, checkpoint, strict=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()
    done: dict[str, Any] = {"fused_conv_bn": 0}
    if fuse_conv_bn:
        from omnisource.models.fusion import fuse_conv_bn as fuse

        done["fused_conv_bn"] = fuse(model)
    setting = cfg.train.channels_last if channels_last is None else channels_last
    done["channels_last"] = apply_memory_format(model, setting, dev)
    if isinstance(getattr(model, "meta", None), dict):
        model.meta.update(done)
    return cfg, model, dev


def model_layout(model: nn.Module) -> str:
    meta = getattr(model, "meta", None) or {}
    return meta.get("layout", "2d")


def model_num_classes(model: nn.Module, cfg: Config | None = None) -> int:
    meta = getattr(model, "meta", None) or {}
    if meta.get("num_classes"):
        return int(meta["num_classes"])
    if cfg is not None and cfg.model.num_classes:
        return int(cfg.model.num_classes)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ConfigError("cannot tell the model's number of classes; set model.num_classes")
    return last[-1].out_features


def use_channels_last(model: nn.Module, layout: str, device: torch.device | str | None = None) -> bool:
    """``train.channels_last: auto``: NHWC for 2D networks of real width, NDHWC for 3D ones
    on a CPU with AVX-512.

    2D nets: oneDNN / cuDNN have fast NHWC convolutions (TSN-R50 training step, fp32, batch 2,
    2 threads: about 1.25x on an AVX2 AMD EPYC, 1.17x on an AVX-512 Xeon, back to back). 3D nets:
    oneDNN's fast NDHWC kernels are an AVX-512 path. On the Xeon (AVX-512 + AMX), fp32 steps with
    channels_last_3d against NCDHW: SlowOnly-R50 1.11-1.21x, I3D-R50 (8 frames) 1.05x, C2D-R50
    1.38x; SlowOnly-R50 in bf16 autocast 1.77x (2.08 -> 3.68 samples/s). On the AVX2 EPYC a
    SlowOnly-R50 step measured 0.93x (interleaved, loaded machine), so there they stay NCDHW.
    On GPU 3D nets stay NCDHW too (cuDNN's fp32 3D convolutions gain little from it; not
    measured here). ``train.channels_last: true`` forces it anywhere
    (tests/models/test_memory_format.py checks it computes the same). Tiny debug networks
    (narrowest conv < 16 channels) gain nothing, and torch 2.13's CPU backward was seen to
    corrupt the heap for a ResNet-18 with 4-channel stages in NHWC on one thread.
    """
    from omnisource.engine.hardware import cpu_has_avx512

    conv = nn.Conv2d if layout == "2d" else nn.Conv3d
    widths = [m.out_channels for m in model.modules() if isinstance(m, conv)]
    if not widths or min(widths) < 16:
        return False
    if layout == "2d":
        return True
    on_cpu = device is None or torch.device(device).type == "cpu"
    return layout == "3d" and on_cpu and cpu_has_avx512()


def apply_memory_format(model: torch.nn.Module, setting: Any, device: torch.device) -> bool:
    """Switch ``model`` to NHWC / NDHWC as ``train.channels_last`` says (``auto``: see
    :func:`use_channels_last`); returns whether it did.

    Why test / predict / bench-infer follow the training setting: the layout that speeds up a
    training step speeds up inference too (a validation pass during training already runs in it),
    and scores agree with the contiguous layout to float rounding (tests/models/test_memory_format.py)."""
    layout = model_layout(model)
    on = use_channels_last(model, layout, device) if setting == "auto" else bool(setting)
    if on:
        model.to(memory_format=torch.channels_last if layout == "2d" else torch.channels_last_3d)
    return on
