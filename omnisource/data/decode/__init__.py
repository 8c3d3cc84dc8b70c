"""Decoding: videos (PyAV, decord), frame folders and images behind one reader interface.

>>> from omnisource.data.decode import open_video
>>> with open_video("clip.mp4") as r:            # doctest: +SKIP
...     frames = r.get_frames([10, 150, 290])   # uint8 [3, H, W, 3], only these decoded

Backends: ``'pyav'`` (default; sparse seeking, see :mod:`.pyav_reader`), ``'decord'``
(optional extra), ``'rawframes'`` (folder of ``img_{:05d}.jpg``), ``'image'`` (one picture as
a one-frame video). ``probe`` and the probe cache live in :mod:`.probe`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import FrameCountError, VideoInfo, VideoReader
from .frames import ImageReader, RawframeReader
from .images import read_image
from .probe import load_probe_cache, probe, probe_many, write_probe_cache

BACKENDS = ("pyav", "decord", "rawframes", "image")


def open_video(path: str | Path, backend: str = "pyav", **kw: Any) -> VideoReader:
    """Open ``path`` with ``backend``; raises :class:`~omnisource.errors.DataError` with the
    reason when it cannot be read.

    Keyword options: pyav -- ``threads`` (None or 1: single-threaded FFmpeg, independent
    keyframe runs side by side when cores are free, see :func:`.pyav_reader.default_threads`;
    0 = FFmpeg's own threading; N = N FFmpeg threads), ``parallel`` (False: never decode keyframe
    runs side by side), ``seek_threshold``
    (packets), ``skip_nonref``, ``strict`` (damaged frames raise instead of being replaced),
    ``cache_index`` (reuse this process's demux index of the file, default True),
    ``index_store`` (a file keeping indexes across processes and runs, see
    :mod:`.index_store`; default ``$OMNISOURCE_INDEX_STORE``);
    decord -- ``threads``; rawframes -- ``template``, ``start_index`` (1), ``modality``
    ('rgb' | 'flow'), ``num_frames``, ``max_side``; image -- ``max_side``.
    """
    path = str(path)
    if backend != "pyav":
        kw.pop("index_store", None)  # a PyAV index; other backends index nothing
    if backend == "pyav":
        from .pyav_reader import PyAVReader

        return PyAVReader(path, **kw)
    if backend == "decord":
        from .decord_reader import DecordReader

        return DecordReader(path, **kw)
    if backend == "rawframes":
        return RawframeReader(path, **kw)
    if backend == "image":
        return ImageReader(path, **kw)
    raise ValueError(f"unknown decoding backend {backend!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "FrameCountError", "ImageReader", "RawframeReader", "VideoInfo",
           "VideoReader", "load_probe_cache", "open_video", "probe", "probe_many",
           "read_image", "write_probe_cache"]
