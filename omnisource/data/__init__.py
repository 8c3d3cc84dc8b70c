"""Video data layer: annotation formats, decoding, sampling, transforms, presets, datasets.

``omnisource.data.build_dataset`` is the stable entry point (see ``datasets.build_dataset``).
It is imported lazily so that ``import omnisource.data.annotations`` (used by light-weight
commands such as ``omnisource probe``) does not pull in torch.
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_dataset"]


def __getattr__(name: str) -> Any:
    if name == "build_dataset":
        from omnisource.data.datasets import build_dataset

        return build_dataset
    raise AttributeError(f"module 'omnisource.data' has no attribute {name!r}")
