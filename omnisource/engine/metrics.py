"""Video-level metrics and view averaging with mmaction2's definitions.

* :func:`average_clips`: mmaction2 ``BaseHead.average_clip``: ``'score'`` averages raw class
  scores over views, ``'prob'`` applies softmax per view then averages, ``'none'`` keeps the
  per-view scores.
* :func:`top_k_accuracy`: a video is correct when its label is among the ``k`` highest scores.
  Ties are broken deterministically (stable sort: the later class index ranks higher); mmaction2
  uses ``np.argsort``'s default sort, whose tie order depends on the numpy version.
* Top-k for ``k >=`` the number of classes is **not applicable** (every video would count as
  correct): :func:`evaluate_scores` reports it as ``None`` and :func:`format_metric` prints
  ``n/a (k >= C classes)``. One rule for test, run, validation logs and reports (a 4-class
  test used to drop top-5 in one place, print ``nan`` in another and 1.000 in a third).
* :func:`mean_class_accuracy`: mean over classes of per-class recall. The class set is the union
  of *ground-truth and predicted* labels (mmaction2's confusion matrix): a class that is
  predicted but never the ground truth counts as 0 accuracy; a class absent from both is ignored.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch


def average_clips(scores: torch.Tensor, mode: str = "prob") -> torch.Tensor:
    """``scores`` [N, V, C] raw class scores per view -> [N, C] (or [N, V, C] for ``'none'``)."""
    if scores.dim() != 3:
        raise ValueError(f"expected [N, V, C] scores, got shape {tuple(scores.shape)}")
    if mode in ("none", None):
        return scores
    if mode == "prob":
        return torch.softmax(scores.float(), dim=2).mean(dim=1)
    if mode == "score":
        return scores.float().mean(dim=1)
    raise ValueError(f"average_clips must be score | prob | none, got {mode!r}")


def _as_2d(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 3:   # per-view scores: rank on the mean score
        s = s.mean(axis=1)
    if s.ndim != 2:
        raise ValueError(f"scores must be [N, C], got shape {s.shape}")
    return s


def top_k_accuracy(scores, labels: Sequence[int], topk: Sequence[int] = (1,)) -> list[float]:
    s = _as_2d(scores)
    y = np.asarray(labels, dtype=np.int64)[:, None]
    if len(y) != len(s):
        raise ValueError(f"{len(s)} score rows but {len(y)} labels")
    if len(y) == 0:
        return [float("nan")] * len(topk)
    order = np.argsort(s, axis=1, kind="stable")
    out = []
    for k in topk:
        top = order[:, -k:]
        out.append(float((top == y).any(axis=1).mean()))
    return out


def confusion_matrix(pred: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts over the union of labels present in ``pred`` or ``real``; returns (matrix, labels)."""
    pred = np.asarray(pred, dtype=np.int64)
    real = np.asarray(real, dtype=np.int64)
    labels = np.unique(np.concatenate([pred, real]))
    index = np.searchsorted(labels, np.stack([real, pred]))
    n = len(labels)
    mat = np.bincount(index[0] * n + index[1], minlength=n * n).reshape(n, n)
    return mat, labels


def mean_class_accuracy(scores, labels: Sequence[int]) -> float:
    s = _as_2d(scores)
    if len(labels) == 0:
        return float("nan")
    mat, _ = confusion_matrix(s.argmax(axis=1), np.asarray(labels))
    cnt = mat.sum(axis=1).astype(np.float64)
    hit = np.diag(mat).astype(np.float64)
    per_class = np.divide(hit, cnt, out=np.zeros_like(hit), where=cnt > 0)
    return float(per_class.mean())


def topk_applicable(k: int, num_classes: int) -> bool:
    """Top-k means something only for ``k`` below the number of classes (top-1 always)."""
    return k == 1 or k < num_classes


def evaluate_scores(scores, labels: Sequence[int], metrics: Sequence[str] = ("top_k_accuracy",
                    "mean_class_accuracy"), topk: Sequence[int] = (1, 5)) -> dict[str, float | None]:
    """``{'top1_acc': .., 'top5_acc': .., 'mean_class_accuracy': ..}`` (mmaction2 key names);
    a top-k that is not applicable (``k >=`` classes) is ``None``."""
    s = _as_2d(scores)
    out: dict[str, float | None] = {}
    for m in metrics:
        if m == "top_k_accuracy":
            ks = [k for k in topk if topk_applicable(k, s.shape[1])]
            accs = dict(zip(ks, top_k_accuracy(s, labels, ks))) if ks else {}
            for k in topk:
                out[f"top{k}_acc"] = accs.get(k)
        elif m == "mean_class_accuracy":
            out["mean_class_accuracy"] = mean_class_accuracy(s, labels)
        else:
            raise ValueError(f"unknown metric {m!r}")
    return out


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under one class's precision-recall curve, the step form (sklearn's
    ``average_precision_score``, mmaction2's ``mean_average_precision``): the mean of the precision
    at the rank of each positive (ties broken by order)."""
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(bool)
    if not hits.any():
        return float("nan")
    ranks = np.nonzero(hits)[0] + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def mean_average_precision(scores, multi_hot) -> float:
    """Mean over classes that have at least one positive of :func:`average_precision`
    (multi-label sets: MMiT, HVU)."""
    s = _as_2d(scores)
    y = np.asarray(multi_hot, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"{s.shape} scores but {y.shape} multi-hot labels")
    aps = [average_precision(s[:, c], y[:, c] > 0.5) for c in range(s.shape[1]) if (y[:, c] > 0.5).any()]
    return float(np.mean(aps)) if aps else float("nan")


def category_map(scores, multi_hot, categories: dict[str, Sequence[int]]) -> dict[str, float]:
    """mAP of each tag category over its own classes (HVU: action, attribute, concept, event,
    object, scene; ``omnisource prepare hvu`` writes the category -> class indices map)."""
    s, y = _as_2d(scores), np.asarray(multi_hot, dtype=np.float64)
    out = {}
    for name, idx in categories.items():
        idx = [int(i) for i in idx]
        out[f"mAP_{name}"] = mean_average_precision(s[:, idx], y[:, idx]) if idx else float("nan")
    return out


def format_metric(key: str, value: float | None, num_classes: int | None = None) -> str:
    """``0.8125``, or ``n/a (5 >= 4 classes)`` for a top-k that is not applicable."""
    if value is None:
        m = re.match(r"top(\d+)_acc$", key)
        if m and num_classes is not None:
            return f"n/a ({m.group(1)} >= {num_classes} classes)"
        return "n/a"
    return f"{value:.4f}"
