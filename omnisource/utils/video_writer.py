"""Writing a video from RGB frames with PyAV: the one place the project encodes video.

Why here: the synthetic world of the demo (:mod:`omnisource.pipeline.world`), the decoding
benchmarks and the tests all generate real files to decode, and each had grown its own copy of
the same encoder loop. The container comes from the file suffix, as FFmpeg chooses it
(``.avi`` gets chunk-numbered timestamps, ``.ts`` an MPEG transport stream, ``.mpg`` an MPEG
program stream), because the files exist to exercise what real containers do. Output is
atomic (:func:`~omnisource.utils.io.atomic_path`: a hidden sibling with the same suffix, renamed
onto ``path`` only once the encoder has flushed and closed the file), so a killed generator never
leaves a truncated video that a later run would take for a finished one.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from omnisource.utils.io import atomic_path


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, codec: str = "libx264",
                fps: int = 25, pix_fmt: str | None = None, options: dict[str, str] | None = None,
                **codec_attrs: Any) -> Path:
    """Encode ``frames`` (uint8 RGB ``H x W x 3``, all the same size) into ``path``.

    ``options``: the codec's private options (``{"crf": "17"}``, ``{"x264-params": ...}``);
    ``codec_attrs``: codec-context attributes (``gop_size``, ``max_b_frames``, ``bit_rate``).
    ``pix_fmt`` defaults to ``yuvj420p`` for MJPEG (full range, as cameras write it) and
    ``yuv420p`` otherwise. Returns ``path``."""
    import av

    path = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    with atomic_path(path) as tmp, av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = pix_fmt or ("yuvj420p" if codec == "mjpeg" else "yuv420p")
        for key, value in codec_attrs.items():
            setattr(stream.codec_context, key, value)
        if options:
            stream.codec_context.options = dict(options)
        for frame in itertools.chain((first,), it):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
