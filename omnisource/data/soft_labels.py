"""Sparse top-k soft pseudo-labels of manifests (``meta.soft_label``), kept compact.

``omnisource filter --soft-labels topk`` writes, per kept web sample, the teacher's top-k
classes as ``meta.soft_label = [[class, prob], ...]`` next to the hard ``label`` (its argmax).
A source that asks for soft labels (``pseudo_label: soft`` in ``sources:``, or
``build_dataset(..., soft_labels=True)``) trains on them as a distribution instead.

Why a separate, CSR-like store: a web source has millions of rows and hundreds of classes;
one dense ``[num_classes]`` list per sample would cost gigabytes of Python floats, while k
(class, prob) pairs per sample cost a few bytes. The dense ``float32`` target is built per
item, when the dataset returns it.

Why renormalise: the top-k probabilities do not sum to 1 (the tail is cut off). Dividing by
their sum gives a proper distribution, so the soft-target cross entropy has the same scale as
the hard-label loss of the other sources (the tail mass is spread over the kept classes, not
over hundreds of unlikely ones).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from omnisource.errors import InputError


class SparseSoftLabels:
    """Per-sample ``(classes, probs)`` pairs in three flat arrays (CSR)."""

    def __init__(self, offsets: np.ndarray, classes: np.ndarray, probs: np.ndarray, num_classes: int):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.classes = np.asarray(classes, dtype=np.int32)
        self.probs = np.asarray(probs, dtype=np.float32)
        self.num_classes = int(num_classes)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def count(self) -> int:
        """Samples that carry a soft label."""
        return int(np.count_nonzero(np.diff(self.offsets)))

    def has(self, i: int) -> bool:
        return bool(self.offsets[i + 1] > self.offsets[i])

    def dense(self, i: int) -> torch.Tensor:
        """The renormalised ``[num_classes]`` float32 target of sample ``i``."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        out = torch.zeros(self.num_classes, dtype=torch.float32)
        p = torch.from_numpy(self.probs[a:b].astype(np.float32))
        out.index_add_(0, torch.from_numpy(self.classes[a:b].astype(np.int64)), p / p.sum())
        return out


def _pairs(value: Any, num_classes: int, label_index: dict[str, int] | None, file: str, line: int | None
           ) -> list[tuple[int, float]]:
    def bad(msg: str) -> InputError:
        return InputError(f"meta.soft_label: {msg}", file, line)

    if not isinstance(value, list) or not value:
        raise bad("expected a non-empty list of [class, probability] pairs")
    out = []
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise bad(f"expected [class, probability], got {pair!r}")
        c, p = pair
        if isinstance(c, str) and label_index is not None:
            if c not in label_index:
                raise bad(f"class {c!r} is not in the label map")
            c = label_index[c]
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes:
            raise bad(f"class {c!r} is not an index in [0, {num_classes})")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0:
            raise bad(f"probability {p!r} is not a finite non-negative number")
        out.append((c, float(p)))
    if sum(p for _, p in out) <= 0:
        raise bad("the probabilities sum to 0")
    return out


def read_sparse_soft_labels(manifest: str | Path, samples: Sequence[Any], num_classes: int | None,
                            label_map: Sequence[str] | None = None) -> SparseSoftLabels:
    """``meta.soft_label`` of every manifest row, aligned with ``samples`` by line number.

    Streams the manifest once (rows without a soft label get none). Raises
    :class:`InputError` naming file:line for a malformed entry, and when soft labels exist but
    the number of classes is unknown.
    """
    from omnisource.data.annotations import iter_manifest

    by_line: dict[int, list[tuple[int, float]]] = {}
    label_index = None if label_map is None else {n: i for i, n in enumerate(label_map)}
    for rec in iter_manifest(manifest, label_map=label_map):
        value = rec.meta.get("soft_label") if isinstance(rec.meta, dict) else None
        if value is None:
            continue
        if num_classes is None:
            raise InputError("sparse soft labels (meta.soft_label) need the number of classes: give "
                             "num_classes= or label_map=", manifest, rec.line)
        by_line[int(rec.line)] = _pairs(value, num_classes, label_index, str(manifest), rec.line)
    offsets = np.zeros(len(samples) + 1, dtype=np.int64)
    classes: list[int] = []
    probs: list[float] = []
    for i, s in enumerate(samples):
        for c, p in by_line.get(int(s.line) if s.line is not None else -1, ()):
            classes.append(c)
            probs.append(p)
        offsets[i + 1] = len(classes)
    return SparseSoftLabels(offsets, np.array(classes, np.int32), np.array(probs, np.float32), num_classes or 0)
