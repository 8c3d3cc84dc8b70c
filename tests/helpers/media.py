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
    import av

    first = frame(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height = first.shape[1], first.shape[0]
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for k, v in ctx.items():
            setattr(s.codec_context, k, v)
        if options:
            s.codec_context.options = options
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(frame(i), format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path
