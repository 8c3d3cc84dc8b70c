"""Demux-only index of a video stream, and a per-process cache of those indexes.

Why a separate module: the index is what lets :class:`~.pyav_reader.PyAVReader` seek and skip
(exact frame count, frame-index <-> pts map, keyframe positions), and building it costs one
demux pass over the file plus one extra FFmpeg open -- 3-30 ms per sample, 5-20% of a sparse
TSN read. The index depends only on the file's bytes, so it is cached per process, keyed by
``(path, size, mtime_ns, inode)``: every epoch after the first skips the demux.

Memory: an entry stores numpy arrays (12 bytes per frame), so the default bound of 4 M frames
(``OMNISOURCE_INDEX_CACHE_FRAMES``; 0 disables the cache) is ~50 MB per process and holds
~13k ten-second clips. Least recently used entries are dropped first. A dataset larger than
that (Kinetics: 240k clips) would demux every file at every read: give it an on-disk
:mod:`.index_store`, shared by all processes and runs.
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

# Formats whose demuxers seek by decode timestamp: a seek to a keyframe's pts lands on the packet
# after it (MPEG-PS/TS, measured), so keyframes are sought by their dts there.
DTS_SEEK_FORMATS = {"avi", "mpeg", "mpegts"}
# Demuxers that cut packets out of a byte stream with a codec parser (MPEG program / transport
# streams): after a seek the first packet can be a fragment of a frame, even one carrying the
# keyframe's own timestamp. The index keeps the keyframes' packet sizes there, and the reader
# feeds the decoder from the packet that has the keyframe's timestamp *and* size.
PARSED_FORMATS = {"mpeg", "mpegts"}
# Packets before a keyframe to seek to, per format: FFmpeg's MPEG-PS demuxer hands out a
# fragment of the frame it lands in (and labels the rest of a keyframe with the next
# timestamp), so it is sent to a packet before the keyframe, and the packets up to the
# keyframe are dropped unfed. Measured on MPEG-1/2 PS files: 0 packets back reached an intact
# keyframe for 0-8% of the keyframes, 1 back for 98-100%, 2 back for 99-100%.
SEEK_PACKETS_BEFORE = {"mpeg": 2}
# Formats that store no presentation timestamps: FFmpeg numbers the chunks (decode order) and
# only a codec parser may turn that into real pts. Their timestamps are used only when
# :func:`_avi_timestamp_problem` finds nothing wrong, and then checked while decoding.
ORDINAL_FORMATS = {"avi"}
# MPEG-4 Part 2 family: a 1-byte packet is a skipped-frame placeholder (no output frame).
SKIP_PLACEHOLDER_CODECS = {"mpeg4", "msmpeg4v3", "msmpeg4v2", "msmpeg4"}

_EMPTY = np.zeros(0, np.int64)


@dataclass
class StreamIndex:
    """Demux-only index of one video stream.

    ``mode`` is ``'pts'`` (timestamps name frames: seeking and skipping allowed) or
    ``'ordinal'`` (decode forward and count; ``reason`` says why). An ordinal index with
    ``key_dpos`` (AVIs with decode-order timestamps) also lets the reader jump to a keyframe,
    whose frame number is then its chunk number (checked while decoding); its ``pts`` are
    the packets' timestamps in decode order. In pts mode ``pts`` holds
    every frame's timestamp in presentation order and ``dpos[i]`` the decode-order position of
    frame ``i``'s packet; ``key_dpos`` / ``key_pts`` are the keyframes in decode order.
    """

    mode: str
    num_frames: int
    pts: np.ndarray = field(default_factory=lambda: _EMPTY)
    dpos: np.ndarray = field(default_factory=lambda: _EMPTY)
    key_dpos: list[int] = field(default_factory=list)
    key_pts: list[int] = field(default_factory=list)
    key_seek: list[int] = field(default_factory=list)  # seek timestamps when not key_pts (dts)
    key_size: list[int] = field(default_factory=list)  # keyframe packet sizes (PARSED_FORMATS)
    reason: str = ""
    verify: bool = False   # timestamps inferred (AVI): the reader checks each output frame
    fmt: str = ""          # the container format (FFmpeg's first name: "mov", "matroska", ...)
    rotation: int | None = None  # display rotation of the frames, once a read has seen one
    # ordinal mode: picture types of frames 0, 1, ... (FFmpeg's AVPictureType digits, '3' = B) as
    # far as reads have decoded every frame; lets a read skip the B-frames it does not want
    # (see PyAVReader._read_ordinal). None: a read found them not to hold; never skip.
    types: str | None = ""

    @property
    def access(self) -> str:
        """How a sparse read reaches a frame: ``seek`` (timestamps name frames), ``seek-checked``
        (counted in decode order, keyframe jumps checked) or ``sequential`` (decoded from the
        start every time; ``reason`` says why)."""
        if self.mode == "pts":
            return "seek"
        return "seek-checked" if self.key_dpos else "sequential"

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
    dts: list = []
    keys: list[int] = []
    sizes: list[int] = []
    placeholders = 0
    try:
        for p in container.demux(stream):
            if p.size == 0:
                continue  # flush marker
            if p.size <= 8 and codec in SKIP_PLACEHOLDER_CODECS:
                placeholders += 1  # a placeholder or a not-coded VOP: packed B-frames
                if p.size == 1:
                    continue  # "skipped frame" placeholder: the decoder outputs nothing
            if getattr(p, "is_discard", False):
                continue  # edit-list trimmed: decoded for reference, never shown
            if p.is_keyframe:
                keys.append(len(pts))
            pts.append(p.pts)
            dts.append(p.dts)
            sizes.append(p.size)
    except Exception as err:  # truncated file: keep what could be read
        log.debug("%s: demux stopped early: %s", path, err)
    n = len(pts)
    if n == 0:
        raise DataError(path, "video stream has no frames")
    reason = ""
    verify = fmt in ORDINAL_FORMATS
    if any(p is None for p in pts):
        reason = "packets without timestamps"
    elif len(set(pts)) != n:
        reason = "duplicate timestamps"
    elif verify:
        reason = _avi_timestamp_problem(bool(stream.codec_context.has_b_frames), pts, placeholders)
    if reason == _DECODE_ORDER and keys and all(d is not None for d in dts):
        # frames are counted in decode order, but a closed GOP's keyframe is frame number
        # <chunk number>: the reader may jump to keyframes, checking each jump
        return StreamIndex("ordinal", n, pts=np.asarray(pts, dtype=np.int64), key_dpos=keys,
                           key_seek=[int(dts[k]) for k in keys], reason=reason, verify=True)
    if reason:
        return StreamIndex("ordinal", n, reason=reason)
    arr = np.asarray(pts, dtype=np.int64)
    order = np.argsort(arr, kind="stable")  # presentation order -> decode position
    if not keys:
        keys = [0]
    # AVI (chunk numbers) and MPEG-PS/TS demuxers seek by dts, which is not the keyframe's pts
    # when frames are reordered; MPEG-PS is sent a few packets before the keyframe
    back = SEEK_PACKETS_BEFORE.get(fmt, 0)
    key_seek = ([int(dts[max(k - back, 0)]) for k in keys]
                if fmt in DTS_SEEK_FORMATS and all(d is not None for d in dts) else [])
    key_size = [int(sizes[k]) for k in keys] if fmt in PARSED_FORMATS else []
    return StreamIndex("pts", n, pts=arr[order], dpos=order.astype(np.int32), key_dpos=keys,
                       key_pts=[int(arr[k]) for k in keys], key_seek=key_seek,
                       key_size=key_size, verify=verify, fmt=fmt)


_DECODE_ORDER = "avi: frames are reordered but the timestamps are in decode order"


def _avi_timestamp_problem(has_b_frames: bool, pts: list, placeholders: int) -> str:
    """Why an AVI's packet timestamps cannot name frames ('' when they can).

    Why not always read AVIs in decode order: intra-only (MJPEG) and GOP-12 MPEG-4 AVIs, common
    in the wild, would then decode every frame before the last sampled one -- 15-35x slower
    per TSN clip than seeking (benchmarks/decode_formats.py). The timestamps FFmpeg gives an
    AVI are chunk numbers: they are presentation times when the stream has no frame
    reordering (then decode order is display order), or when the codec parser reordered them
    itself (MPEG-4 Part 2: decode-order numbers are then not increasing). They are wrong for a
    reordering stream whose numbers still increase (H.264 with B-frames: decode order) and for
    packed MPEG-4 B-frames (DivX/XviD with placeholder or not-coded VOPs of a few bytes, as in
    HMDB51 and UCF101). Keyframe flags in an AVI index can also be wrong, so the reader checks
    what comes out of the decoder (``StreamIndex.verify``) and falls back to decode order at
    the first mismatch.
    """
    if placeholders:
        return "avi with packed MPEG-4 B-frames (placeholder / not-coded frames)"
    increasing = all(a < b for a, b in zip(pts, pts[1:]))
    if has_b_frames and increasing:
        return _DECODE_ORDER
    if not has_b_frames and not increasing:
        return "avi: timestamps out of order in a stream without reordering"
    return ""


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
