"""Demux-only index of a video stream, and a per-process cache of those indexes.

Why a separate module: the index is what lets :class:`~.pyav_reader.PyAVReader` seek and skip
(exact frame count, frame-index <-> pts map, keyframe positions), and building it costs one
demux pass over the file plus one extra FFmpeg open -- 3-30 ms per sample, 5-20% of a sparse
TSN read. The index depends only on the file's bytes, so it is cached per process, keyed by
``(path, size, mtime_ns, inode)``: every epoch after the first skips the demux.

Memory: an entry stores numpy arrays (12 bytes per frame), so the default bound of 4 M frames
(``OMNISOURCE_INDEX_CACHE_FRAMES``; 0 disables the cache) is ~50 MB per process and holds
~13k ten-second clips. Least recently used entries are dropped first.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from omnisource.errors import DataError

log = logging.getLogger("omnisource.data.decode")

# Formats whose per-packet timestamps cannot be trusted to name frames.
ORDINAL_FORMATS = {"avi"}
# MPEG-4 Part 2 family: a 1-byte packet is a skipped-frame placeholder (no output frame).
SKIP_PLACEHOLDER_CODECS = {"mpeg4", "msmpeg4v3", "msmpeg4v2", "msmpeg4"}

_EMPTY = np.zeros(0, np.int64)


@dataclass
class StreamIndex:
    """Demux-only index of one video stream.

    ``mode`` is ``'pts'`` (timestamps name frames: seeking and skipping allowed) or
    ``'ordinal'`` (decode forward and count; ``reason`` says why). In pts mode ``pts`` holds
    every frame's timestamp in presentation order and ``dpos[i]`` the decode-order position of
    frame ``i``'s packet; ``key_dpos`` / ``key_pts`` are the keyframes in decode order.
    """

    mode: str
    num_frames: int
    pts: np.ndarray = field(default_factory=lambda: _EMPTY)
    dpos: np.ndarray = field(default_factory=lambda: _EMPTY)
    key_dpos: list[int] = field(default_factory=list)
    key_pts: list[int] = field(default_factory=list)
    reason: str = ""

    @property
    def cost(self) -> int:
        """Cache cost in frames (an ordinal index costs 1)."""
        return max(1, int(self.pts.size))

    def dpos_map(self) -> dict[int, int]:
        """``{pts: decode position}``: O(1) lookups for the per-packet loop (built per read,
        not cached, so the cache stays compact)."""
        return dict(zip(self.pts.tolist(), self.dpos.tolist()))


def build_index(container, stream, path: str) -> StreamIndex:
    """Demux every packet of ``stream`` (no decoding) and build its :class:`StreamIndex`."""
    codec = stream.codec_context.name
    fmt = container.format.name.split(",")[0]
    pts: list = []
    keys: list[int] = []
    try:
        for p in container.demux(stream):
            if p.size == 0:
                continue  # flush marker
            if p.size == 1 and codec in SKIP_PLACEHOLDER_CODECS:
                continue  # "skipped frame" placeholder: the decoder outputs nothing
            if getattr(p, "is_discard", False):
                continue  # edit-list trimmed: decoded for reference, never shown
            if p.is_keyframe:
                keys.append(len(pts))
            pts.append(p.pts)
    except Exception as err:  # truncated file: keep what could be read
        log.debug("%s: demux stopped early: %s", path, err)
    n = len(pts)
    if n == 0:
        raise DataError(path, "video stream has no frames")
    reason = ""
    if fmt in ORDINAL_FORMATS:
        reason = f"{fmt} timestamps are not reliable"
    elif any(p is None for p in pts):
        reason = "packets without timestamps"
    elif len(set(pts)) != n:
        reason = "duplicate timestamps"
    if reason:
        return StreamIndex("ordinal", n, reason=reason)
    arr = np.asarray(pts, dtype=np.int64)
    order = np.argsort(arr, kind="stable")  # presentation order -> decode position
    if not keys:
        keys = [0]
    return StreamIndex("pts", n, pts=arr[order], dpos=order.astype(np.int32),
                       key_dpos=keys, key_pts=[int(arr[k]) for k in keys])


def file_key(path: str) -> tuple | None:
    """Cache key of a file's current contents, or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)


class IndexCache:
    """Thread-safe LRU of :class:`StreamIndex` bounded by the total number of frames."""

    def __init__(self, max_frames: int):
        self.max_frames = int(max_frames)
        self._items: OrderedDict[tuple, StreamIndex] = OrderedDict()
        self._frames = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple | None) -> StreamIndex | None:
        if key is None or self.max_frames <= 0:
            return None
        with self._lock:
            idx = self._items.get(key)
            if idx is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return idx

    def put(self, key: tuple | None, index: StreamIndex) -> None:
        if key is None or index.cost > self.max_frames:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._frames -= old.cost
            self._items[key] = index
            self._frames += index.cost
            while self._frames > self.max_frames:
                _, dropped = self._items.popitem(last=False)
                self._frames -= dropped.cost

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._frames = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


def _max_frames_from_env() -> int:
    raw = os.environ.get("OMNISOURCE_INDEX_CACHE_FRAMES", "4000000")
    try:
        return int(raw)
    except ValueError:
        log.warning("OMNISOURCE_INDEX_CACHE_FRAMES=%r is not an integer; using 4000000", raw)
        return 4_000_000


INDEX_CACHE = IndexCache(_max_frames_from_env())


def clear_index_cache() -> None:
    """Forget every cached index (e.g. after rewriting files in place within one mtime tick)."""
    INDEX_CACHE.clear()
