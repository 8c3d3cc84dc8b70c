"""The demo world's network names (the presets themselves live in :mod:`omnisource.models.tiny`)."""
from __future__ import annotations

from omnisource.models.tiny import TINY_2D, TINY_3D

__all__ = ["TINY_3D", "TINY_2D"]
