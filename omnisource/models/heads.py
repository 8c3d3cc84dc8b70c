"""Classification heads: TSN (segment consensus) and I3D (spatio-temporal pooling).

Both end in ``fc_cls`` (``cls_head.fc_cls.{weight,bias}`` in a checkpoint, as in mmaction2) and
return raw scores; softmax and view averaging belong to the test engine.

TSN consensus: mmaction2 1.x averages the pooled *features* of the segments and then applies
``fc_cls``; 0.x averaged the *scores* after ``fc_cls``. ``fc_cls`` is affine, so both give the
same scores (up to float rounding); we average features because it runs the fc once per video.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["TSNHead", "I3DHead"]


class _Head(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, dropout: float, init_std: float) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.init_std = init_std
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.fc_cls = nn.Linear(in_channels, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """mmaction2's head init: N(0, init_std) weights, zero bias."""
        nn.init.normal_(self.fc_cls.weight, std=self.init_std)
        nn.init.zeros_(self.fc_cls.bias)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[N, in_channels]`` -> scores ``[N, num_classes]`` (dropout, fc)."""
        if self.dropout is not None:
            feats = self.dropout(feats)
        return self.fc_cls(feats)


class TSNHead(_Head):
    """Spatial average pool per segment, average consensus over segments, dropout, fc."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float = 0.4, init_std: float = 0.01) -> None:
        super().__init__(num_classes, in_channels, dropout, init_std)

    def pool(self, x: torch.Tensor, num_segs: int) -> torch.Tensor:
        """``[N*S, C, h, w]`` backbone maps -> consensus features ``[N, C]``."""
        x = x.mean(dim=(2, 3))
        return x.reshape(-1, num_segs, x.shape[1]).mean(dim=1)

    def forward(self, x: torch.Tensor, num_segs: int) -> torch.Tensor:
        return self.classify(self.pool(x, num_segs))


class I3DHead(_Head):
    """Spatio-temporal average pool, dropout, fc: one score row per clip."""

    def __init__(self, num_classes: int, in_channels: int, dropout: float = 0.5, init_std: float = 0.01) -> None:
        super().__init__(num_classes, in_channels, dropout, init_std)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, t, h, w]`` -> ``[N, C]``."""
        return x.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(x))
