"""Optional decord backend (``pip install 'omnisource[decord]'``), imported lazily.

Kept for parity with mmaction2 configs that use ``DecordInit``/``DecordDecode``. decord 0.6
applies the display-matrix rotation itself (checked against the PyAV reader on decord's
``video_{0,90,180,270}.mov``: identical pixels), so frames are returned as decord gives them.
"""
from __future__ import annotations

import os

import numpy as np

from omnisource.errors import ConfigError, DataError

from .base import FrameCountError, VideoInfo, VideoReader


_quiet = False


def _import_decord():
    global _quiet
    try:
        import decord  # noqa: F401
    except ImportError:
        raise ConfigError("backend 'decord' needs the optional package decord: "
                          "pip install 'omnisource[decord]' (or use backend='pyav')") from None
    if not _quiet:
        # decord lets its bundled FFmpeg print every decoder complaint to stderr (hundreds of
        # lines per H.264 transport stream, from every DataLoader worker); what matters to a
        # run reaches it anyway as a DataError naming the file. OMNISOURCE_DECORD_LOG=1 keeps
        # FFmpeg's messages for debugging a file.
        if os.environ.get("OMNISOURCE_DECORD_LOG", "") in ("", "0"):
            decord.logging.set_level(decord.logging.QUIET)
        _quiet = True
    return decord


class DecordReader(VideoReader):
    """``threads``: decord's decoding threads, 1 by default as in mmaction2's ``DecordInit``
    (decord's own default, 0, lets FFmpeg pick: measured on ../shared/data, TSN 1x1x3 reads,
    one process: 3% less wall time for 25% more CPU -- a loss once DataLoader workers already
    fill the cores)."""

    def __init__(self, path: str, threads: int = 1):
        decord = _import_decord()
        self.path = str(path)
        self.start_index = 0
        from .base import file_problem

        bad = file_problem(self.path)
        if bad is not None:
            raise DataError(self.path, bad[1])
        try:
            self._vr = decord.VideoReader(self.path, num_threads=threads)
        except Exception as err:
            raise DataError(self.path, f"decord cannot open it: {err}") from None
        self._n = len(self._vr)
        self._info_cache: VideoInfo | None = None

    def _num_frames(self) -> int:
        return self._n

    def _read(self, idx: np.ndarray) -> np.ndarray:
        if int(idx.max()) >= self._n:
            raise FrameCountError(self.path, f"frame {int(idx.max())} requested but the video "
                                  f"has {self._n} frames", actual=self._n)
        try:
            arr = self._vr.get_batch(idx.tolist()).asnumpy()
        except Exception as err:
            raise DataError(self.path, f"decord failed to decode frames: {err}") from None
        return arr

    def _info(self) -> VideoInfo:
        if self._info_cache is None:
            from .pyav_reader import read_info

            self._info_cache = read_info(self.path)
            self._info_cache.num_frames = self._n
        return self._info_cache

    def close(self) -> None:
        self._vr = None
