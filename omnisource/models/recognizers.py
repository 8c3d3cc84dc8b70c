"""Recognizers: backbone + head with mmaction2's input layouts.

* :class:`Recognizer2D` (TSN): input ``[N, S, 3, H, W]`` where ``S`` = segments x views, as the
  data presets produce it. All ``N*S`` frames go through the backbone as one batch and the head
  averages over ``S`` (mmaction2's Recognizer2D passes ``num_segs = inputs.shape[1]``), giving
  ``[N, num_classes]``.
* :class:`Recognizer3D` (SlowOnly, I3D, C2D): input ``[N, V, 3, T, H, W]`` (V views) or
  ``[N, 3, T, H, W]``; views are flattened into the batch and every view keeps its own score
  row, ``[N*V, num_classes]``; the test engine averages views (``average_clips``).

Inference: ``model(x)`` returns raw scores (before softmax). Training: ``model(x, loss_fn=fn)``
returns a dict of losses, ``{"loss_cls": fn(scores, "cls"), ...}``: a family with auxiliary heads
(TPN) adds its own ``loss_*`` terms by overriding :meth:`losses`, the trainer sums every
``loss_*`` value and logs each. ``fn(scores, name)`` is the engine's criterion for this batch
(per-source weights, soft targets, label smoothing): the recognizer never sees labels itself.
``model.meta`` describes the preset (family, layout, classes, input size, normalisation, default
data presets) so the engine and CLI need no side tables.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from omnisource.models.heads import I3DHead, TSNHead

__all__ = ["Recognizer2D", "Recognizer3D", "LossFn"]

# the engine's criterion: (scores of this batch, which head) -> scalar loss
LossFn = Callable[[torch.Tensor, str], torch.Tensor]


class _Recognizer(nn.Module):
    layout = ""

    def __init__(self, backbone: nn.Module, cls_head: nn.Module, meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head
        self.meta: dict[str, Any] = dict(meta or {})
        self.meta["layout"] = self.layout
        self.meta["num_classes"] = cls_head.num_classes

    @property
    def num_classes(self) -> int:
        return self.cls_head.num_classes

    @property
    def feat_dim(self) -> int:
        return self.backbone.feat_dim

    def reset_head(self) -> None:
        """Re-initialise the classifier (fine-tuning on a new label set)."""
        self.cls_head.init_weights()

    def forward(self, x: torch.Tensor, loss_fn: LossFn | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
        """Scores (inference), or with ``loss_fn`` the dict of training losses."""
        scores = self.predict(x)
        if loss_fn is None:
            return scores
        return self.losses(scores, loss_fn)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def losses(self, scores: torch.Tensor, loss_fn: LossFn) -> dict[str, torch.Tensor]:
        """The training losses of one batch: the classifier's (families with auxiliary heads add
        theirs)."""
        return {"loss_cls": loss_fn(scores, "cls")}


class Recognizer2D(_Recognizer):
    """TSN-style recognizer: a 2D backbone per frame, average consensus over segments."""

    layout = "2d"

    def __init__(self, backbone: nn.Module, cls_head: TSNHead, meta: dict[str, Any] | None = None) -> None:
        super().__init__(backbone, cls_head, meta)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[2] != self.meta.get("in_channels", 3):
            raise ValueError(f"{type(self).__name__} expects [N, S, {self.meta.get('in_channels', 3)}, H, W], "
                             f"got {tuple(x.shape)}")

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, S, 3, H, W]`` -> raw scores ``[N, num_classes]`` (consensus over S)."""
        self._check(x)
        n, s = x.shape[:2]
        feats = self.backbone(x.reshape((n * s,) + x.shape[2:]))
        return self.cls_head(feats, num_segs=s)

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled backbone features.

        ``[N, 3, H, W]`` images -> ``[N, feat_dim]`` (used by de-duplication / retrieval);
        ``[N, S, 3, H, W]`` -> the segment-averaged ``[N, feat_dim]`` the classifier sees.
        """
        if x.dim() == 4:
            return self.backbone(x).mean(dim=(2, 3))
        self._check(x)
        n, s = x.shape[:2]
        return self.cls_head.pool(self.backbone(x.reshape((n * s,) + x.shape[2:])), s)


class Recognizer3D(_Recognizer):
    """3D-CNN recognizer: one score row per view (clip x crop)."""

    layout = "3d"

    def __init__(self, backbone: nn.Module, cls_head: I3DHead, meta: dict[str, Any] | None = None) -> None:
        super().__init__(backbone, cls_head, meta)

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        c = self.meta.get("in_channels", 3)
        if x.dim() == 6 and x.shape[2] == c:
            return x.reshape((-1,) + x.shape[2:])
        if x.dim() == 5 and x.shape[1] == c:
            return x
        raise ValueError(f"{type(self).__name__} expects [N, V, {c}, T, H, W] or [N, {c}, T, H, W], "
                         f"got {tuple(x.shape)}")

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, V, 3, T, H, W]`` or ``[N, 3, T, H, W]`` -> raw scores ``[N*V, num_classes]``."""
        return self.cls_head(self.backbone(self._flatten(x)))

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, ``[N*V, feat_dim]`` (same layouts as :meth:`forward`)."""
        return self.cls_head.pool(self.backbone(self._flatten(x)))
