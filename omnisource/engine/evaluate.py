"""Video-level inference over multi-view test sets, gathered in dataset order across ranks.

Each dataset item holds all test views of one video (clips x crops, the preset's layout). The
model returns ``[B, C]`` for 2D recognizers (consensus over every segment of every view, as
mmaction2's TSN head does in test mode) or ``[B*V, C]`` for 3D recognizers (one row per view);
views are then combined with :func:`omnisource.engine.metrics.average_clips`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable

import numpy as np
import torch

from omnisource.engine.distributed import gather_ordered
from omnisource.engine.logging_utils import progress
from omnisource.engine.metrics import average_clips, evaluate_scores


def autocast_context(device: torch.device, amp: str):
    """``torch.autocast`` for ``amp`` in {'none', 'bf16', 'fp16'} on ``device``."""
    if amp in (None, "none"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _label_value(label: Any) -> Any:
    if isinstance(label, torch.Tensor):
        return label.tolist()
    return label


def view_scores(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Raw class scores per view: ``[B, V, C]``."""
    out = model(inputs)
    b = inputs.shape[0]
    if out.shape[0] % b:
        raise RuntimeError(f"model returned {out.shape[0]} rows for a batch of {b}")
    return out.reshape(b, out.shape[0] // b, out.shape[-1])


@torch.no_grad()
def run_inference(model: torch.nn.Module, loader: Iterable[dict], num_samples: int, *,
                  device: torch.device, average: str = "prob", amp: str = "none",
                  desc: str = "test", show_progress: bool = True,
                  info: dict | None = None) -> tuple[np.ndarray, list]:
    """Scores of every sample in dataset order (``[N, C]``, or ``[N, V, C]`` for ``'none'``)
    and their labels. Works on a rank's shard under torchrun; results are gathered on every rank.

    An unreadable test video is replaced by the dataset with another readable one (counted in the
    item's ``skipped`` field). Counting that here, from the items, is the only count that holds
    with DataLoader workers and several ranks (each process's dataset counter sees only its own
    share); pass ``info={}`` to receive ``info['replaced']``, the number of rows that stand in
    for an unreadable video, so callers can say that the accuracy covers substitutes.
    """
    was_training = model.training
    model.eval()
    rows: list[np.ndarray] = []
    labels: list[Any] = []
    replaced: list[bool] = []
    try:
        for batch in progress(loader, total=len(loader) if hasattr(loader, "__len__") else None,
                              desc=desc, enabled=show_progress):
            x = batch["inputs"].to(device, non_blocking=True)
            with autocast_context(device, amp):
                s = view_scores(model, x)
            s = average_clips(s.float(), average)
            rows.extend(s.cpu().numpy())
            sk = batch.get("skipped")
            replaced.extend(bool(sk[i]) if sk is not None else False for i in range(x.shape[0]))
            lab = batch.get("label")
            if lab is None:
                labels.extend([None] * x.shape[0])
            else:
                labels.extend(_label_value(lab[i]) for i in range(x.shape[0]))
    finally:
        model.train(was_training)
    rows = gather_ordered(rows, num_samples)
    labels = gather_ordered(labels, num_samples)
    if info is not None:
        info["replaced"] = int(sum(gather_ordered(replaced, num_samples)))
    if not rows:
        return np.zeros((0, 0), dtype=np.float32), labels
    return np.stack(rows).astype(np.float32), labels


def compute_metrics(scores: np.ndarray, labels: list, metrics=("top_k_accuracy",
                    "mean_class_accuracy"), topk=(1, 5)) -> dict[str, float]:
    """Metrics for single-label sets; multi-label (list) labels are reported as unsupported."""
    if not labels or any(lab is None or lab == -1 for lab in labels):
        return {}  # unlabelled (label -1) samples: nothing to score
    if any(isinstance(lab, list) for lab in labels):
        return {}
    return evaluate_scores(scores, [int(v) for v in labels], metrics, topk)


CROP_NAMES = {1: "center", 3: "three", 10: "ten"}


def load_config_and_model(config: str, checkpoint: str | None, *, sets=None, device: str | None = None,
                          fuse_conv_bn: bool = False, channels_last: Any = None):
    """(cfg, model on device in eval mode) for test / predict / bench-infer; ``fuse_conv_bn``
    folds the BatchNorms into their convolutions (:mod:`omnisource.models.fusion`);
    ``channels_last`` overrides ``train.channels_last`` (auto | True | False). What was done is
    recorded in ``model.meta`` (``fused_conv_bn``, ``channels_last``) for the commands to report."""
    from omnisource.config import load_config
    from omnisource.engine.train import build_model

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


def apply_memory_format(model: torch.nn.Module, setting: Any, device: torch.device) -> bool:
    """Switch ``model`` to NHWC / NDHWC as ``train.channels_last`` says (``auto``: see
    :func:`omnisource.engine.train.use_channels_last`); returns whether it did.

    Why test / predict / bench-infer follow the training setting: the layout that speeds up a
    training step speeds up inference too (a validation pass during training already runs in it),
    and scores agree with the contiguous layout to float rounding (tests/models/test_memory_format.py)."""
    from omnisource.engine.train import model_layout, use_channels_last

    layout = model_layout(model)
    on = use_channels_last(model, layout, device) if setting == "auto" else bool(setting)
    if on:
        model.to(memory_format=torch.channels_last if layout == "2d" else torch.channels_last_3d)
    return on


def test_preset_overrides(cfg, num_clips: int | None = None, crops: int | None = None) -> dict:
    """Preset overrides of ``data.test`` plus ``--num-clips`` / ``--crops`` (1 | 3 | 10)."""
    over = dict(cfg.data.test.overrides)
    num_clips = num_clips or cfg.test.num_clips
    crops = crops or cfg.test.crops
    if num_clips:
        over["num_clips"] = int(num_clips)
    if crops:
        over["crop"] = CROP_NAMES[int(crops)]
    return over
