"""Video-level inference over multi-view test sets, gathered in dataset order across ranks.

Each dataset item holds all test views of one video (clips x crops, the preset's layout). The
model returns ``[B, C]`` for 2D recognizers (consensus over every segment of every view, as
mmaction2's TSN head does in test mode) or ``[B*V, C]`` for 3D recognizers (one row per view);
views are then combined with :func:`omnisource.engine.metrics.average_clips`.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from omnisource.engine.distributed import gather_ordered
from omnisource.engine.logging_utils import progress
from omnisource.engine.metrics import average_clips, evaluate_scores
from omnisource.engine.modeling import (apply_memory_format, autocast_context,  # noqa: F401  (re-exported)
                                         load_config_and_model)


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
                    "mean_class_accuracy"), topk=(1, 5), categories: dict | None = None) -> dict[str, float]:
    """Top-k / mean class accuracy of single-label sets; mean average precision of multi-label
    ones (multi-hot label rows), and with ``categories`` (name -> class indices, HVU) the mAP of
    each category."""
    from omnisource.engine.metrics import category_map, mean_average_precision

    if not labels or any(lab is None or (not isinstance(lab, list) and lab == -1) for lab in labels):
        return {}  # unlabelled (label -1) samples: nothing to score
    if any(isinstance(lab, list) for lab in labels):
        out = {"mean_average_precision": mean_average_precision(scores, labels)}
        if categories:
            out.update(category_map(scores, labels, categories))
        return out
    return evaluate_scores(scores, [int(v) for v in labels], metrics, topk)


CROP_NAMES = {1: "center", 3: "three", 10: "ten"}


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
