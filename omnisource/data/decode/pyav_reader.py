"""PyAV (FFmpeg) reader that decodes only the frames a sampler asks for.

Why this is hand-written rather than ``for frame in container.decode()``: training samples a
few frames per video (TSN: 3 or 8 sparse segments) and decoding is 95% of the data-loading
time, so what matters is *which packets reach the decoder*. mmaction2's PyAV path decodes and
converts to RGB every frame up to the last index; we instead

* index the file once by demuxing (no decoding; ~3 ms for a 10 s clip): packet timestamps
  in presentation order give an exact frame count and a robust frame-index <-> pts map
  (variable frame rate, first pts != 0, B-frame reordering) plus the keyframe positions.
  The index is cached per process (:mod:`.pyav_index`), so later epochs open each file once
  and never demux it twice;
* jump to the keyframe before the next wanted frame when it lies more than
  ``seek_threshold`` packets ahead (demuxer seek, decoder flushed; the decoder is fed from the
  keyframe's own packet, so a demuxer that lands early -- or hands out a fragment of a frame,
  as MPEG program streams do -- costs a few packets read, never a wrong frame). Before such a
  seek, and after the last wanted frame of a sample, the decoder is *drained* (end-of-stream): the
  wanted frames come out at once instead of after more packets decoded only to push them
  through the B-frame / frame-thread delay. A reader called again and again (chunked
  reads) keeps its decoder running instead, so it never seeks back;
* tell the decoder to skip non-reference frames we do not want (``skip_frame='NONREF'``,
  switched per packet so a wanted non-reference frame is still decoded). Skipping a frame
  nothing refers to cannot change any other frame, so the output is pixel-identical to a
  full sequential decode (tested on the real files);
* convert to RGB only the wanted frames (one reused single-threaded swscale context);
* decode single-threaded (:func:`default_threads` says why) and, when cores are free (the main
  process, or fewer workers than cores), decode the independent keyframe runs of a read side by
  side, each with its own demuxer and decoder in a thread (FFmpeg releases the GIL): the read
  then takes as long as its longest run instead of the sum of them. When a dataset fetches
  the clips of a batch side by side, those threads take the cores and every read stays on its
  own thread (:mod:`omnisource.data.parallelism`).

Index semantics: frame ``i`` is the ``i``-th frame a full decode from the start outputs.
Streams without usable timestamps (missing or duplicate pts; AVIs whose chunk numbers are not
presentation times, see :func:`.pyav_index._avi_timestamp_problem`) are read in *ordinal*
mode: decoded forward from the start and counted, which is exactly that definition (reads of
codecs whose B-frames are never references -- the packed-B-frame MPEG-4 AVIs of HMDB51 and UCF101
-- skip the B-frames they do not want once earlier reads have learnt where they are). AVI
timestamps that look usable are checked frame by frame (a keyframe after every seek,
increasing output timestamps). An AVI whose timestamps are in decode order (H.264 with
B-frames) is counted, but may jump to the keyframe of a closed GOP, whose frame number is its
chunk number; every jump is checked (:meth:`PyAVReader._read_ordinal`). Whenever the decoder
disagrees with the index (a frame pts the index does not know, or a frame that never comes out
although nothing failed), the reader switches to ordinal mode for that file, so the
timestamp path can only ever make things faster, never different.

Frame counts: the index counts packets. For MPEG-4 Part 2 (DivX/XviD AVIs such as HMDB51)
one-byte packets are "skipped frame" placeholders (FFmpeg's mpeg4 decoder returns
FRAME_SKIPPED for an 8-bit VOP); they are not counted, which makes HMDB51's off-by-one
header exact. If a count is still too high (truncated or damaged files), asking for a
frame past the real end raises :class:`FrameCountError` with the real count.

Damaged frames (a packet that fails to decode, e.g. decord's ``corrupted.mp4``) are
replaced by the next decodable frame and counted in ``reader.damaged_frames`` with a
warning, unless ``strict=True`` (then :class:`DataError`).
"""
from __future__ import annotations

import bisect
import logging
import math
import os
import threading
from typing import Iterator

import numpy as np

from omnisource.data.parallelism import decode_parallelism, thread_pool
from omnisource.errors import DataError

from .base import FrameCountError, VideoInfo, VideoReader, stack_frames
from .index_store import IndexStore, get_store
from .pyav_index import INDEX_CACHE, StreamIndex, build_index, file_key

log = logging.getLogger("omnisource.data.decode")

# Decoders whose skip_frame=NONREF is implemented by the codec itself (reference-frame
# aware). Others either ignore it or drop frames that later frames depend on (GIF).
_NONREF_CODECS = {"h264", "hevc"}
# Decoders in which no B-frame is ever a reference and skip_frame=NONREF skips exactly the
# B-frames: a read in decode order may skip the B-frames it does not want once it knows where
# they are (StreamIndex.types). MPEG-4 Part 2 is the codec of DivX/XviD AVIs with packed
# B-frames (HMDB51, UCF101), which are always read in decode order.
_B_NONREF_CODECS = {"mpeg4", "mpeg1video", "mpeg2video"}
_B = "3"  # AV_PICTURE_TYPE_B in StreamIndex.types


class _Inconsistent(Exception):
    """The timestamp index disagrees with the decoder: redo in ordinal mode."""


def _av():
    import av  # core dependency; imported lazily so `omnisource --help` stays fast

    return av


# Containers whose header gives a decoder everything it needs (codec parameters and extradata;
# the MP4 demuxer derives the reorder depth from the composition offsets), so the open may skip
# probing the stream by decoding: see _open_container(fast=True). The options go to FFmpeg's
# open: ``skip_frame`` to the decoder it probes with (key frames only), ``probesize`` to the
# demuxer. Matroska/WebM needs the latter: its demuxer reads packets until ``probesize`` bytes
# (5 MB by default) to estimate frame rates the header does not hold -- 5.0 of 5.4 ms to open
# the 426x240 flipping_a_pancake.mkv (1.5 ms with key frames only, 0.4 ms with both). The MP4
# demuxer has sample tables and gains nothing from a small ``probesize``. Not for formats
# without a header (MPEG-TS/PS, raw streams): there probing is what finds the streams.
FAST_OPEN_FORMATS: dict[str, dict[str, str]] = {
    "mov": {"skip_frame": "nonkey"},
    "matroska": {"skip_frame": "nonkey", "probesize": "32"},
}


def _open_container(path: str, fast: str = ""):
    """Open with FFmpeg, turning every failure into a one-line DataError.

    ``fast``: a :data:`FAST_OPEN_FORMATS` name (the file's container format, from its index),
    or "" for a normal open. FFmpeg's stream probing at open decodes the first frame(s) only to
    learn what the container already says or the first decoded frame will say (pixel format)
    -- 2.5 of the 2.6 ms to open test.mp4, 5 of 7 ms for a 340x256 Kinetics-like clip -- and a
    Matroska demuxer reads on to estimate frame rates. A fast open probes with key frames only
    and stops early. The reader asks for it only for :data:`FAST_OPEN_FORMATS` files whose
    timestamp index it already has: the decoder used for reading is separate and gets its
    parameters from the container, every decoded frame is the same (checked on every MP4 and
    MKV in ../shared/data and on generated MKV/WebM files), and should a decoder ever drop a frame
    it misjudged as out of order, the timestamp checks notice the frame missing and the file
    falls back to decoding from the start with a normal open. One thing is lost: frames of a
    fast-opened file carry no display matrix, so the reader fast-opens only once a read of a
    normally opened container has recorded the rotation in the index, and applies that."""
    av = _av()
    from .base import file_problem

    bad = file_problem(path)
    if bad is not None:
        raise DataError(path, bad[1])
    try:
        container = av.open(path, metadata_errors="replace",
                            options=FAST_OPEN_FORMATS[fast] if fast else None)
    except Exception as err:  # FFmpeg raises many types (InvalidDataError, EOFError, ...)
        raise DataError(path, f"cannot open as a video: {type(err).__name__}: {err}") from None
    if not container.streams.video:
        container.close()
        raise DataError(path, "no video stream")
    return container


def _first_video_stream(container):
    """The first video stream that is not a cover picture (multi-stream files)."""
    for s in container.streams.video:
        try:
            if s.disposition & s.disposition.__class__.attached_pic:
                continue
        except Exception:  # pragma: no cover - older PyAV without dispositions
            pass
        return s
    return container.streams.video[0]


# How many packets may be dropped after a seek, looking for the keyframe's own packet, before
# the seek counts as missed (MPEG-PS lands a packet or two early by design, see pyav_index).
_MAX_DROPPED_AFTER_SEEK = 32


def _video_only(container):
    """The stream :func:`_first_video_stream` picks, with every other stream discarded by the
    demuxer: audio and subtitle packets (more packets than video in a typical YouTube / Kinetics
    clip) are then skipped instead of read and wrapped. Measured: index builds 6-25% faster,
    sparse reads ~4% faster on files with audio."""
    s = _first_video_stream(container)
    discard_all = getattr(getattr(_av().stream, "Discard", None), "all", None)
    if discard_all is not None:  # PyAV >= 14
        for other in container.streams:
            if other is not s:
                try:
                    other.discard = discard_all
                except Exception:  # pragma: no cover - an old PyAV: read and drop them
                    break
    return s


_local = threading.local()


def _frame_to_rgb(frame, rotation: int) -> np.ndarray:
    """RGB uint8 HxWx3 honouring the frame's colour range/matrix (PyAV >= 14 passes them to
    swscale) and its display-matrix rotation (counter-clockwise degrees, FFmpeg's sign).

    One single-threaded swscale context per thread and process, reused across frames and
    readers: ``to_ndarray`` builds a new context *and a thread pool* for every frame (0.3 ms,
    more than the conversion of a 340x256 frame). Single-threaded because a context with a
    pool cannot be used or freed after ``fork`` (the pool's threads do not exist in a
    DataLoader worker: pthread_join hangs) and because the pool costs more than it saves on
    video-sized frames; per process (pid check) so a forked worker never touches the
    parent's. swscale reuses the context only when geometry and formats match, so the
    pixels are the same as ``to_ndarray``'s."""
    fmt = _local.__dict__.get("reformatter")
    if fmt is None or _local.pid != os.getpid():
        from av.video.reformatter import VideoReformatter

        fmt = _local.reformatter = VideoReformatter()
        _local.pid = os.getpid()
    arr = fmt.reformat(frame, format="rgb24", threads=1).to_ndarray()
    k = (int(round(rotation / 90.0))) % 4
    if k:
        arr = np.ascontiguousarray(np.rot90(arr, k))
    return arr


def default_threads() -> int:
    """FFmpeg decoding threads when the caller does not choose: 1.

    Why not FFmpeg's frame threading: a sparse read skips the non-reference frames and decodes
    a chain of P-frames that each need the previous one, so frame threads have little to
    overlap, and every seek or drain restarts their pipeline. Measured on the real videos in
    ../shared/data (TSN 1x1x3 indices, one process): 1 thread was faster in wall time as well
    as CPU on 4 of 5 files (test.mp4 141 -> 123 ms/clip, demo.mp4 90 -> 70, an HMDB51 AVI
    116 -> 44) and 8% slower on one. Measured again on test.mp4's first 200 packets: 2 frame
    threads take a full decode from 153 to 125 ms wall, but with the non-reference frames
    skipped (as a sparse read does) from 89 to 106 ms. Free cores are used by decoding
    independent keyframe runs, or the clips of a batch, side by side instead
    (:mod:`omnisource.data.parallelism`).
    """
    return 1


class PyAVReader(VideoReader):
    """See module docstring.

    ``threads``: FFmpeg decoding threads (``None``: :func:`default_threads`; 0: FFmpeg's
    choice; 1: no threading). ``parallel``: decode the independent keyframe runs of a read side
    by side when cores are free (:func:`decode_parallelism`); False keeps a read on the calling
    thread (a caller with its own pool, or a one-core CPU measurement). ``seek_threshold``:
    seek only when the keyframe before the next wanted frame lies more than this many packets
    ahead. ``cache_index``: reuse this process's cached demux index of the file (see
    :mod:`.pyav_index`). ``index_store``: an :class:`~.index_store.IndexStore` file (path) that
    keeps indexes across processes and runs (default: ``$OMNISOURCE_INDEX_STORE``, if set).
    """

    def __init__(self, path: str, threads: int | None = None, seek_threshold: int = 4,
                 skip_nonref: bool = True, strict: bool = False, cache_index: bool = True,
                 parallel: bool = True, index_store: str | os.PathLike | IndexStore | None = None):
        self.path = str(path)
        self.threads = None if threads is None else int(threads)
        self.parallel = bool(parallel)
        self.seek_threshold = int(seek_threshold)
        self.skip_nonref = bool(skip_nonref)
        self.strict = bool(strict)
        self.cache_index = bool(cache_index)
        self.start_index = 0
        self.damaged_frames = 0
        self._errors = 0                         # packets that failed to decode (cumulative)
        self._index: StreamIndex | None = None
        self._dpos: dict[int, int] | None = None  # pts -> decode position (pts mode)
        self._info_cache: VideoInfo | None = None
        self._container = None
        self._stream = None
        self._it: Iterator | None = None
        self._next_dpos: int | None = None      # pts mode: decode position of the next packet
        self._drained = False                    # decoder got EOF: must seek/reopen to go on
        self._ord_next = 0                       # ordinal mode: frames output so far
        self._reads = 0                          # completed timestamp-mode reads
        # what a later call can still get without seeking (reset by every seek/reopen):
        self._last_out: int | None = None        # pts of the last frame the decoder output
        self._lost: set[int] = set()             # pts fed while skipping (never output)
        self._carry: dict = {}                   # pts -> frame output after a call's last target
        self._fed_from: int | None = None        # decode position of the first packet fed
        self._await_key = False                  # verified index: next output must be a keyframe
        self.seeks = 0                           # keyframe seeks and reopens (diagnostics)
        self._key = file_key(self.path) if self.cache_index else None
        self._store = get_store(index_store) if self._key is not None else None
        if self._key is not None:
            self._index = INDEX_CACHE.get(self._key)
            if self._index is None and self._store is not None:
                self._index = self._store.get(self._key)
                if self._index is not None:
                    INDEX_CACHE.put(self._key, self._index)
        # validate now so a broken path fails at open time with a clear reason; the container
        # is kept for indexing or, when the index is cached, for decoding (one open per read)
        self._spare_fast = self._fast_open()
        self._spare = _open_container(self.path, fast=self._spare_fast)
        self._container_fast = ""               # the decoding container skipped probing

    # -- container state ----------------------------------------------------------------
    def _fast_open(self) -> str:
        """The format whose fast open a decoding container may use (see _open_container), or
        "": only with a timestamp index (its checks catch a dropped frame) of a known format."""
        ix = self._index
        ok = (ix is not None and ix.mode == "pts" and ix.fmt in FAST_OPEN_FORMATS
              and ix.rotation is not None)
        return ix.fmt if ok else ""

    def _rotation_of(self, frame) -> int:
        """The frame's display rotation: from the index for a fast-opened container (its frames
        carry no display matrix), else from the frame -- and the first one seen is recorded in
        the index (memory cache and store), which is what allows fast opens later."""
        ix = self._index
        if self._container_fast and ix is not None and ix.rotation is not None:
            return ix.rotation
        rotation = int(getattr(frame, "rotation", 0) or 0)
        if ix is not None and ix.rotation is None:
            ix.rotation = rotation  # the store gets it when the read is over (see _read)
        return rotation

    def _fresh(self) -> None:
        """(Re)open the decoding container positioned at the start of the file."""
        spare, self._spare = self._spare, None
        self._close_container()
        fast = self._spare_fast if spare is not None else self._fast_open()
        c = spare if spare is not None else _open_container(self.path, fast=fast)
        self._container_fast = fast
        s = _video_only(c)
        threads = default_threads() if self.threads is None else self.threads
        if threads != 1:
            s.thread_type = "AUTO"
            s.codec_context.thread_count = threads
        else:
            # Said explicitly: PyAV's default is slice threading with FFmpeg's automatic count
            # (0), so every open spawned and joined idle slice threads (2% of a sparse read on
            # ../shared/data, all single-slice), and multi-slice H.264, WPP HEVC and libdav1d
            # (its own pool) really decoded on several threads -- in every DataLoader worker.
            s.codec_context.thread_count = 1
        self._container, self._stream = c, s
        self._it = c.demux(s)
        self._next_dpos = 0
        self._ord_next = 0
        self._reset_decoder_state()
        self._fed_from = 0

    def _reset_decoder_state(self) -> None:
        self._drained = False
        self._await_key = self._index is not None and self._index.verify
        self._last_out = None
        self._lost = set()
        self._carry = {}
        self._fed_from = None

    def _close_container(self) -> None:
        if getattr(self, "_spare", None) is not None:
            self._spare.close()
            self._spare = None
        if getattr(self, "_container", None) is not None:
            try:
                self._container.close()
            except Exception:  # pragma: no cover
                pass
        self._container = self._stream = self._it = None

    def close(self) -> None:
        self._close_container()

    def __del__(self) -> None:  # containers hold FFmpeg threads; release them promptly
        try:
            self._close_container()
        except Exception:
            pass

    # -- index ----------------------------------------------------------------------------
    def _set_index(self, index: StreamIndex) -> StreamIndex:
        self._index, self._dpos = index, None
        if self._key is not None:
            INDEX_CACHE.put(self._key, index)
            if self._store is not None:  # also a fall-back to ordinal: later runs start there
                self._store.put(self._key, index)
        return index

    def _build_index(self) -> StreamIndex:
        if self._index is not None:
            return self._index
        c, self._spare = (self._spare or _open_container(self.path)), None
        try:
            index = build_index(c, _video_only(c), self.path)
        finally:
            c.close()
        return self._set_index(index)

    def _num_frames(self) -> int:
        return self._build_index().num_frames

    @property
    def mode(self) -> str:
        """'pts' (timestamp index: seeking and frame skipping) or 'ordinal' (decode forward
        and count); indexes the file if needed."""
        return self._build_index().mode

    # -- metadata ---------------------------------------------------------------------------
    def _info(self) -> VideoInfo:
        if self._info_cache is None:
            self._info_cache = read_info(self.path)
        if self._index is not None:
            self._info_cache.num_frames = self._index.num_frames
        return self._info_cache

    # -- decoding -----------------------------------------------------------------------------
    def _read(self, idx: np.ndarray) -> np.ndarray:
        index = self._build_index()
        rotation_known, types_known = index.rotation is not None, index.types
        frames = self._read_frames(index, idx)
        ix = self._index
        learnt = ix is index and ((not rotation_known and ix.rotation is not None)
                                  or ix.types != types_known)
        if learnt and self._store is not None:
            self._store.put(self._key, ix)  # by this read (or its side-by-side runs)
        return frames

    def _read_frames(self, index: StreamIndex, idx: np.ndarray) -> np.ndarray:
        wanted = sorted(set(int(i) for i in idx))
        if wanted[-1] >= index.num_frames:
            raise FrameCountError(self.path, f"frame {wanted[-1]} requested but the video has "
                                  f"{index.num_frames} frames", actual=index.num_frames)
        got: dict[int, np.ndarray] | None = None
        if index.mode == "pts":
            try:
                got = self._read_runs_in_parallel(index, wanted)
                if got is None:
                    got = self._read_pts(index, wanted)
            except _Inconsistent as why:
                log.info("%s: timestamp index disagrees with the decoder (%s); "
                         "reading in decode order", self.path, why)
                index = self._set_index(StreamIndex(
                    "ordinal", index.num_frames,
                    reason=f"timestamps disagree with the decoder: {why}"))
                self._close_container()
        if got is None and index.key_dpos:  # ordinal with keyframe seeks (verified)
            try:
                got = self._read_ordinal(wanted, seekable=True)
            except _Inconsistent as why:
                log.info("%s: keyframe seeks disagree with the decoder (%s); "
                         "reading in decode order from the start", self.path, why)
                self._set_index(StreamIndex("ordinal", index.num_frames,
                                            reason=f"keyframe jumps disagree with the decoder: {why}"))
                self._close_container()
        if got is None:
            try:
                got = self._read_ordinal(wanted)
            except _Inconsistent as why:  # the picture types learnt do not hold: never skip
                log.info("%s: %s; reading every frame", self.path, why)
                self._index.types = None
                self._close_container()
                got = self._read_ordinal(wanted)
        return stack_frames([got[int(i)] for i in idx], self.path)

    def _decode_packet(self, packet) -> list:
        try:
            return list(self._stream.codec_context.decode(packet))
        except Exception as err:  # a damaged packet: count it and go on with the stream
            self._errors += 1
            log.debug("%s: decode error: %s", self.path, err)
            return []

    def _drain(self) -> list:
        """Feed end-of-stream: the decoder returns every frame it still holds (B-frame
        reordering, frame threads) without decoding another packet. Afterwards it must be
        flushed by a seek (or the file reopened) before it accepts packets again."""
        self._drained = True
        try:
            return list(self._stream.codec_context.decode(None))
        except Exception:
            return []

    def _damaged(self, what: str) -> None:
        if self.strict:
            raise DataError(self.path, f"damaged stream: {what}")
        self.damaged_frames += 1
        if self.damaged_frames == 1:
            log.warning("%s: damaged stream (%s); using the nearest decodable frame",
                        self.path, what)

    def _seek_to_key(self, index: StreamIndex, k: int, via: int | None = None) -> None:
        """Position the demuxer at keyframe number ``k`` (decoder flushed). ``via``: seek to
        that earlier keyframe's position instead (a retry when the demuxer landed past ``k``);
        :meth:`_read_pts` drops the packets before ``k``'s own."""
        self.seeks += 1
        src = k if via is None else via
        if src == 0 or self._container is None:
            self._fresh()  # reopening is the most robust way back to the very start
            if src == 0:
                return
        target = index.key_seek[src] if index.key_seek else index.key_pts[src]
        self._seek_container(target)
        self._it = self._container.demux(self._stream)
        self._next_dpos = None  # learnt from the first packet
        self._reset_decoder_state()

    def _seek_container(self, target: int) -> None:
        """Demuxer seek to the keyframe at or before ``target`` (also flushes the decoder); a
        container that cannot seek sends the file to decode-from-start instead of failing."""
        try:
            self._container.seek(target, backward=True, any_frame=False, stream=self._stream)
        except Exception as err:
            raise _Inconsistent(f"seek failed: {err}") from err

    def _next_packet(self):
        """Next non-empty packet, or None at end of stream (a demux error counts as the end:
        truncated files keep everything before the damage)."""
        try:
            packet = next(self._it)
        except StopIteration:
            return None
        except Exception as err:
            log.debug("%s: demux error: %s", self.path, err)
            return None
        return None if packet.size == 0 else packet

    @staticmethod
    def _key_for(index: StreamIndex, target_pts: int, t_dpos: int) -> int:
        """Number of the last keyframe at or before the target in decode order *and*
        presentation order (open GOPs: a leading B-frame needs the previous keyframe)."""
        k = bisect.bisect_right(index.key_dpos, t_dpos) - 1
        while k > 0 and index.key_pts[k] > target_pts:
            k -= 1
        return max(k, 0)

    def _run_end(self, index: StreamIndex, dpos: dict[int, int], order: list[int]) -> int:
        """Decode position of the last packet of the current run: ``order`` (pending frames
        by decode position) is followed while the next frame's keyframe is within
        ``seek_threshold`` packets, i.e. while going on beats seeking (the same rule
        :meth:`_read_pts` applies). After this packet the decoder is drained."""
        last = dpos[order[0]]
        for q in order[1:]:
            dq = dpos[q]
            kd = index.key_dpos[self._key_for(index, q, dq)]
            if kd > last + 1 + self.seek_threshold:
                break
            last = dq
        return last

    def _read_pts(self, index: StreamIndex, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode the wanted frames run by run: seek to a keyframe when the next frame is
        far ahead, feed packets (non-reference ones we do not want are skipped by the
        decoder) up to the run's last wanted packet, then drain the decoder so no packet
        past it is decoded just to push the wanted frames out of the reordering delay.

        The last run of a reader's *first* call is drained too (a dataset reads a sample in
        one call). Later calls are taken as a chunk-by-chunk reader: their last run is not
        drained, packets after the last wanted one are decoded in full, and frames output
        after it are kept, so the next call goes on without seeking back."""
        if self._dpos is None:
            self._dpos = index.dpos_map()
        dpos = self._dpos
        pts_of = {int(index.pts[i]): i for i in wanted}
        pending = set(pts_of)
        out: dict[int, np.ndarray] = {}
        for p in list(pending):  # output at the end of the previous call
            fr = self._carry.get(p)
            if fr is not None:
                out[pts_of[p]] = _frame_to_rgb(fr, self._rotation_of(fr))
                pending.discard(p)
        self._carry = {}
        if self._container is None:
            self._fresh()
        # packets from run_start on are fed in this call with the right skip setting
        run_start = None if self._drained else self._next_dpos
        errors_at_start = self._errors
        rotation = 0
        last_frame = None
        skipping = False
        top = max(pts_of)  # frames output past this one are kept for the next call
        dropped, retried = 0, False  # after a seek: packets dropped before the keyframe's
        key_num = {d: j for j, d in enumerate(index.key_dpos)}  # keyframe decode pos -> number

        def take(frames: list) -> None:
            """Convert the wanted frames; frames fed in this run that should already have
            come out are damaged (a decode error happened) or prove the index wrong."""
            nonlocal rotation, last_frame
            if not frames:  # the common case: a skipped or still-buffered packet
                return
            for fr in frames:
                p = fr.pts
                if p is None or p not in dpos:
                    raise _Inconsistent(f"decoder output pts {p} not in the index")
                if index.verify:  # inferred timestamps (AVI): check what the decoder says
                    if self._await_key and not fr.key_frame:
                        raise _Inconsistent(f"the frame at keyframe pts {p} is not a keyframe")
                    if self._last_out is not None and p <= self._last_out:
                        raise _Inconsistent(f"decoder output pts {p} after {self._last_out}")
                    self._await_key = False
                self._last_out = p
                rotation = self._rotation_of(fr)
                if p in pending:
                    out[pts_of[p]] = _frame_to_rgb(fr, rotation)
                    pending.discard(p)
                elif p > top:
                    self._carry[p] = fr
                lo = run_start if run_start is not None else 0
                hi = self._next_dpos if self._next_dpos is not None else -1
                for q in [q for q in pending if q < p and lo <= dpos[q] < hi]:
                    self._replace_missing(q, fr, rotation, errors_at_start, pts_of, out)
                    pending.discard(q)
                last_frame = fr

        def retry_earlier(k: int) -> None:
            """The demuxer missed keyframe ``k``'s own packet: seek once more, from the keyframe
            before it (its packets up to ``k``'s are dropped unfed as after any seek)."""
            nonlocal dropped, retried, run_start
            self._seek_to_key(index, k, via=k - 1)
            dropped, retried = 0, True
            if self._next_dpos is not None:  # reopened at the start
                run_start = 0

        def still_coming(q: int) -> bool:
            """Fed before this call, decoded (not skipped) and not output yet."""
            return (self._fed_from is not None and dpos[q] >= self._fed_from
                    and q not in self._lost and (self._last_out is None or q > self._last_out))

        while pending:
            order = sorted(pending, key=dpos.__getitem__)
            target = order[0]
            t_dpos = dpos[target]
            run_end = self._run_end(index, dpos, order)
            # the run starts at the earliest keyframe any of its frames needs: with open GOPs
            # a B-frame decoded after a keyframe may display before it (and need the GOP
            # before), so the first frame's own keyframe is not always enough
            k = min(self._key_for(index, q, dpos[q]) for q in order if dpos[q] <= run_end)
            kd = index.key_dpos[k]
            pos = self._next_dpos
            behind = run_start is not None and t_dpos < run_start
            if (self._drained or pos is None or run_start is None
                    or (behind and not all(still_coming(q) for q in order
                                           if dpos[q] < run_start))
                    or (t_dpos >= pos and kd > pos + self.seek_threshold)):
                self._seek_to_key(index, k)
                run_start = self._next_dpos  # None until the first packet tells us
                skipping = False  # a fresh/flushed decoder
                dropped, retried = 0, False
            # drain after the run unless it is the last of a later call (see docstring)
            drain_at = run_end if (run_end < dpos[order[-1]] or self._reads == 0) else None
            cc = self._stream.codec_context
            # not with inferred (AVI) timestamps: a skipped frame could hide the reordering
            # the checks look for (seen with MPEG-4); such AVIs have no non-reference frames
            # to skip anyway (no B-frames, or MPEG-4 Part 2, which is not in the list)
            use_skip = self.skip_nonref and cc.name in _NONREF_CODECS and not index.verify
            while True:
                packet = self._next_packet()
                if packet is None and self._next_dpos is None and not retried and k > 0:
                    # the stream ended before the keyframe's packet came (MPEG-PS near the
                    # end of a file: timestamps after a seek can be shifted): retry once
                    retry_earlier(k)
                    continue
                if packet is None:  # end of stream with frames still pending
                    if skipping:
                        skipping = False
                        cc.skip_frame = "DEFAULT"
                    take(self._drain())
                    self._close_container()
                    self._next_dpos = None
                    if pending and self._errors == errors_at_start:
                        raise _Inconsistent("end of stream before all indexed frames came out")
                    for q in sorted(pending):
                        if last_frame is None:  # (errors happened: see above)
                            raise DataError(self.path, "no frame could be decoded")
                        self._damaged(f"frame {pts_of[q]} could not be decoded")
                        out[pts_of[q]] = _frame_to_rgb(last_frame, rotation)
                    pending.clear()
                    break
                ppts = packet.pts
                if self._next_dpos is None:  # after a seek: start at a keyframe's own packet
                    d = dpos.get(ppts)
                    j = key_num.get(d) if d is not None and d <= kd else None
                    if j is None or (index.key_size and packet.size != index.key_size[j]):
                        # not a keyframe at or before the run's (a packet before it, or a
                        # fragment of a frame in a parsed stream): dropped unfed. An earlier
                        # keyframe (a demuxer without a fine seek index) is a fine start.
                        # Past the keyframe: one retry from the keyframe before, then the
                        # index is not to be trusted
                        dropped += 1
                        if (d is not None and d > kd) or dropped > _MAX_DROPPED_AFTER_SEEK:
                            if retried or k == 0:
                                raise _Inconsistent(f"seek landed past keyframe pts "
                                                    f"{index.key_pts[k]} (pts {ppts})")
                            retry_earlier(k)
                        continue
                    self._next_dpos = run_start = self._fed_from = d
                fed = self._next_dpos
                self._next_dpos += 1
                if use_skip:
                    # skip unwanted non-reference frames up to the run's last wanted packet;
                    # an undrained tail is decoded in full for the next call
                    want_it = ppts in pending or (drain_at is None
                                                  and (fed > run_end or ppts > top))
                    if want_it == skipping:  # switch only on change
                        skipping = not want_it
                        cc.skip_frame = "NONREF" if skipping else "DEFAULT"
                    if skipping:
                        self._lost.add(ppts)
                take(self._decode_packet(packet))
                if drain_at is None:
                    if not pending:
                        break
                    continue
                if fed >= drain_at:  # the run's last wanted packet is in: drain
                    if skipping:
                        skipping = False
                        cc.skip_frame = "DEFAULT"
                    take(self._drain())
                    for q in sorted(q for q in pending if dpos[q] <= fed
                                    and dpos[q] >= (run_start or 0)):
                        # fed but never output: damage, or the index is wrong
                        if last_frame is None and self._errors != errors_at_start:
                            raise DataError(self.path, "no frame could be decoded")
                        self._replace_missing(q, last_frame, rotation, errors_at_start,
                                              pts_of, out)
                        pending.discard(q)
                    break
        if skipping and self._stream is not None:
            self._stream.codec_context.skip_frame = "DEFAULT"
        self._reads += 1
        return out

    def _parallel_buckets(self, index: StreamIndex, wanted: list[int], ways: int) -> list[list[int]]:
        """Split ``wanted`` into keyframe runs (where :meth:`_read_pts` would seek anyway) and
        deal the runs to ``ways`` buckets, longest run first to the least-loaded bucket, so
        the buckets' decoding costs (packets from the run's keyframe to its last frame) even
        out. Fewer than two non-empty buckets means nothing to parallelise."""
        if self._dpos is None:
            self._dpos = index.dpos_map()
        dpos = self._dpos
        runs: list[list[int]] = []                    # [first keyframe dpos, last dpos, frames...]
        for i in sorted(wanted, key=lambda i: dpos[int(index.pts[i])]):
            p = int(index.pts[i])
            d = dpos[p]
            kd = index.key_dpos[self._key_for(index, p, d)]
            if runs and kd <= runs[-1][1] + 1 + self.seek_threshold:
                runs[-1][0] = min(runs[-1][0], kd)   # open GOP: see _read_pts
                runs[-1][1] = d
                runs[-1].append(i)
            else:
                runs.append([kd, d, i])
        if len(runs) < 2:
            return []
        loads = [0] * min(ways, len(runs))
        buckets: list[list[int]] = [[] for _ in loads]
        for cost, frames in sorted(((r[1] - r[0] + 1, r[2:]) for r in runs), key=lambda r: -r[0]):
            b = loads.index(min(loads))
            loads[b] += cost
            buckets[b] += frames
        return [sorted(b) for b in buckets]

    def _read_runs_in_parallel(self, index: StreamIndex, wanted: list[int]
                               ) -> dict[int, np.ndarray] | None:
        """First read of a reader with cores to spare: decode the buckets of
        :meth:`_parallel_buckets` at once -- this reader takes the first in the calling
        thread, a fresh single-threaded reader of the same file (same index) each of the
        others in the decode pool. None when it does not apply (later reads keep the
        sequential path, whose decoder state chunked reads reuse)."""
        single = self.threads is None or self.threads == 1
        ways = decode_parallelism() if single and self.parallel else 1
        if ways < 2 or self._reads or self._container is not None:
            return None
        buckets = self._parallel_buckets(index, wanted, ways)
        if not buckets:
            return None
        subs = [PyAVReader(self.path, threads=1, seek_threshold=self.seek_threshold,
                           skip_nonref=self.skip_nonref, strict=self.strict, cache_index=False)
                for _ in buckets[1:]]
        for sub in subs:
            sub._index, sub._dpos = index, self._dpos
        pool = thread_pool(ways - 1, "decode")
        futures = [pool.submit(sub._read_pts, index, b) for sub, b in zip(subs, buckets[1:])]
        error: BaseException | None = None
        out: dict[int, np.ndarray] = {}
        try:
            out.update(self._read_pts(index, buckets[0]))
        except BaseException as err:  # collect the other threads before re-raising
            error = err
        for sub, fut in zip(subs, futures):
            try:
                out.update(fut.result())
            except BaseException as err:
                error = error or err
            finally:
                self.damaged_frames += sub.damaged_frames
                self._errors += sub._errors
                self.seeks += sub.seeks
                sub.close()
        if error is not None:
            raise error
        return out

    def _replace_missing(self, q: int, frame, rotation: int, errors_at_start: int,
                         pts_of: dict[int, int], out: dict[int, np.ndarray]) -> None:
        """A wanted frame was fed but never output: with a decode error in this read it is
        damaged (use the neighbouring frame); without one the index is wrong."""
        if self._errors == errors_at_start:
            raise _Inconsistent(f"frame pts {q} was never output")
        self._damaged(f"frame {pts_of[q]} could not be decoded")
        out[pts_of[q]] = _frame_to_rgb(frame, rotation)

    def _read_ordinal(self, wanted: list[int], seekable: bool = False) -> dict[int, np.ndarray]:
        """Decode forward counting output frames.

        Skipping (from the start, codecs of ``_B_NONREF_CODECS``): every frame a read decodes
        adds its picture type to ``StreamIndex.types``, so later reads know which frames are
        B-frames. They are output as soon as they are decoded, right after the reference frame
        before them in display order comes out, so once frame ``L`` is out the decoder's next
        frames are the B-frames ``L+1 ..`` up to the next reference frame; when none of that run
        is wanted it is skipped (``skip_frame='NONREF'``: nothing refers to a B-frame, so no other
        frame changes) and the next frame out is the reference after the run. Every frame out is
        checked against the type learnt for its number; a mismatch raises :class:`_Inconsistent`
        (the caller then reads every frame). Measured on HMDB51's packed-B-frame AVIs: the
        B-frames are 25-50% of the frames.

        ``seekable`` (an index with ``key_dpos``: an AVI whose chunk numbers are in decode
        order, e.g. H.264 with B-frames): when the next wanted frame lies past a keyframe more
        than ``seek_threshold`` frames ahead, jump there and count from the keyframe's chunk
        number. That number is its frame number only if its GOP is closed, which is checked
        on the way: the first frame out after the jump must be that keyframe, and once the
        segment is drained every chunk fed since the jump must have come out (a leading
        B-frame of an open GOP is either shown before the keyframe or dropped). A failed
        check raises :class:`_Inconsistent` before any frame is returned."""
        if (self._container is None or self._next_dpos is not None or self._drained
                or self._ord_next > wanted[0]):
            self._fresh()
            self._next_dpos = None  # marks the container as being in ordinal use
        index = self._index
        seg: dict | None = None     # the jumped-to segment being checked
        pending = set(wanted)
        out: dict[int, np.ndarray] = {}
        cc = self._stream.codec_context
        types_at_start = index.types  # None: learnt types found not to hold, never skip
        known = types_at_start or ""
        typed = (not seekable and types_at_start is not None and cc.name in _B_NONREF_CODECS
                 and self._ord_next <= len(known))
        skip_b = typed and self.skip_nonref
        learnt: list[str] = []      # types of frames past ``known``, decoded in this call
        skipping: tuple[int, int] | None = None  # the B-run being skipped (first, last)

        def b_run(j: int) -> tuple[int, int] | None:
            """Frames ``j ..`` while they are B-frames, when the run's end is known."""
            k = j
            while k < len(known) and known[k] == _B:
                k += 1
            return (j, k - 1) if j < k < len(known) else None

        def take(frames: list) -> None:
            nonlocal skipping
            for fr in frames:  # consume every frame so the count stays right
                if seg is not None:
                    if seg["out"] == 0 and (fr.pts != seg["key_pts"] or not fr.key_frame):
                        raise _Inconsistent(f"frame pts {fr.pts} came out first after a seek to "
                                            f"keyframe pts {seg['key_pts']}")
                    seg["out"] += 1
                if skipping is not None:
                    self._ord_next = skipping[1] + 1  # the run was skipped
                    skipping = None
                i = self._ord_next
                self._ord_next += 1
                if typed:
                    t = str(int(fr.pict_type))
                    n = len(known)
                    if i < n:
                        if known[i] != t:
                            raise _Inconsistent(f"frame {i} is of picture type {t}, "
                                                f"learnt as {known[i]}")
                    elif i == n + len(learnt):
                        learnt.append(t)
                if i in pending:
                    out[i] = _frame_to_rgb(fr, self._rotation_of(fr))
                    pending.discard(i)

        def set_skip() -> None:
            """Skip the B-run the decoder turns to next when none of it is wanted."""
            nonlocal skipping
            if skipping is not None:
                return  # decided until the frame after the run comes out
            run = b_run(self._ord_next)
            skip = run is not None and not any(j in pending for j in range(run[0], run[1] + 1))
            if skip != (cc.skip_frame == "NONREF"):
                cc.skip_frame = "NONREF" if skip else "DEFAULT"
            skipping = run if skip else None

        def close_segment() -> None:
            if seg is not None:
                take(self._drain())
                if seg["out"] != seg["fed"]:
                    raise _Inconsistent(f"{seg['fed'] - seg['out']} of {seg['fed']} frames fed "
                                        f"after keyframe pts {seg['key_pts']} never came out")

        try:
            while pending:
                if seekable:
                    target = min(pending)
                    k = bisect.bisect_right(index.key_dpos, target) - 1
                    kd = index.key_dpos[k]
                    if k > 0 and kd > self._ord_next + self.seek_threshold:
                        close_segment()
                        self._seek_to_key(index, k)   # by key_seek: the AVI's chunk number
                        self._ord_next = kd
                        seg = {"key_pts": int(index.pts[kd]), "fed": 0, "out": 0}
                if skip_b:
                    set_skip()
                packet = self._next_packet()
                if packet is not None:
                    if seg is not None:
                        if seg["fed"] == 0 and packet.pts != seg["key_pts"]:
                            raise _Inconsistent(f"seek landed on pts {packet.pts}, not on keyframe "
                                                f"pts {seg['key_pts']}")
                        seg["fed"] += 1
                    take(self._decode_packet(packet))
                else:
                    take(self._drain())
                if packet is None and pending:
                    if seg is not None:  # the count after a jump is only checked up to here
                        raise _Inconsistent("end of stream after a keyframe seek")
                    actual = self._ord_next
                    self._close_container()
                    if self._index is not None:
                        self._index.num_frames = actual  # the cached index learns it too
                    if self._info_cache is not None:
                        self._info_cache.num_frames = actual
                    if actual == 0:
                        raise DataError(self.path, "no frame could be decoded")
                    raise FrameCountError(self.path, f"frame {max(pending)} requested but only "
                                          f"{actual} frames can be decoded", actual=actual)
            if seg is not None:
                close_segment()  # drained: the next call starts afresh or seeks
        finally:
            if self._stream is not None and self._stream.codec_context is cc \
                    and cc.skip_frame != "DEFAULT":
                cc.skip_frame = "DEFAULT"  # a later call decides afresh
            if learnt and index.types is types_at_start:  # (not None-d or grown meanwhile)
                grown = known + "".join(learnt)
                if len(grown) > len(index.types or ""):
                    index.types = grown
        return out


def read_info(path: str) -> VideoInfo:
    """Container metadata plus the first frame's rotation and pixel format (one decode)."""
    c = _open_container(path)
    try:
        s = _first_video_stream(c)
        cc = s.codec_context
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else None
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif c.duration is not None:
            duration = c.duration / 1_000_000
        declared = int(s.frames) if s.frames else None
        width, height, pix_fmt, rotation = cc.width, cc.height, cc.pix_fmt, 0
        try:
            for fr in c.decode(s):
                width, height = fr.width, fr.height
                pix_fmt = fr.format.name
                rotation = int(getattr(fr, "rotation", 0) or 0)
                break
        except Exception as err:
            log.debug("%s: could not decode a first frame: %s", path, err)
        if (int(round(rotation / 90.0)) % 2) == 1:
            width, height = height, width
        estimate = declared
        if estimate is None and duration and fps:
            estimate = int(math.floor(duration * fps + 0.5))
        return VideoInfo(path=str(path), num_frames=estimate, fps=fps, width=int(width),
                         height=int(height), codec=cc.name, pix_fmt=pix_fmt,
                         rotation=(-int(round(rotation))) % 360, duration=duration,
                         declared_frames=declared)
    finally:
        c.close()
