"""Generated test videos."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np


def encode_video(path: Path, n: int, codec: str, options: dict | None = None, *,
                 frame: Callable[[int], np.ndarray], **ctx) -> Path:
    """``n`` frames ``frame(i)`` (RGB, all the same size) encoded with ``codec`` in the container
    the suffix names, as FFmpeg writes it (an AVI gets chunk-numbered timestamps, an .mpg is an
    MPEG program stream); ``ctx``: codec-context attributes, ``options``: codec options."""
    from omnisource.utils.video_writer import write_video

    return write_video(path, (frame(i) for i in range(n)), codec=codec, options=options, **ctx)
