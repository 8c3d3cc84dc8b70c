"""Shared plumbing of the model-driven web stages (dedup, filter, untrimmed).

* where a record's media lives (:func:`resolve_media`) and which frames of it to read
  (:func:`load_record_frames`; reduced-size JPEG decoding and time segments -> frames live in
  the data layer, :mod:`omnisource.data.decode`, which the report thumbnails share);
* the uint8 -> model-input preprocessing for single frames (:func:`center_crop`,
  :func:`random_crops`, :func:`to_input`);
* :class:`OrderedPool`: persistent decoding workers with a bounded look-ahead, so that
  decoding overlaps the forward pass;
* :func:`frame_features`: globally pooled 2D backbone features, batched.

Workers are spawned (not forked; see :class:`OrderedPool`), so load functions and their
arguments must be picklable module-level objects.

Why a persistent pool instead of a ``DataLoader`` per chunk: the stage runner hands us records
chunk by chunk (that is what makes it resumable), and a ``DataLoader`` would fork fresh workers
for every chunk and start each chunk with an empty pipeline. :class:`OrderedPool` keeps its
worker processes for the whole stage, keeps ``window`` items in flight (bounded memory even for
3D clips), and returns results in submission order -- what a ``DataLoader`` with workers does,
minus the per-chunk restart. ``num_workers=0`` runs everything inline (tests, debugging).
"""
from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from omnisource.data.decode.base import segment_frame_range
from omnisource.data.decode.images import read_image_reduced
from omnisource.errors import DataError, InputError

log = logging.getLogger("omnisource.web.features")

#: mmaction2 / ImageNet normalisation in the 0..255 range (what the zoo models expect)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

IMAGE_KINDS = ("image",)
VIDEO_KINDS = ("video", "untrimmed", "rawframes")


def _get(rec: Any, key: str, default: Any = None) -> Any:
    if isinstance(rec, dict):
        return rec.get(key, default)
    return getattr(rec, key, default)


def record_kind(rec: Any) -> str:
    """'image' or 'video' family of a record (Sample or ManifestRecord)."""
    kind = _get(rec, "kind") or "video"
    if kind in IMAGE_KINDS:
        return "image"
    if kind in VIDEO_KINDS:
        return kind
    raise InputError(f"unknown record kind {kind!r} for {_get(rec, 'path')}",
                     _get(rec, "file"), _get(rec, "line"))


def resolve_media(path: str, data_root: str | Path | None) -> Path:
    """Absolute path of a record's media: relative paths are taken from ``data_root``.

    Web manifests written by ``ingest`` may hold absolute paths (crawled files anywhere);
    target lists hold paths relative to their data root, as in mmaction2.
    """
    p = Path(path)
    if p.is_absolute() or data_root is None:
        return p
    return Path(data_root) / p


def uniform_indices(num_frames: int, k: int, start: int = 0) -> list[int]:
    """Centres of ``k`` equal segments of ``[start, start + num_frames)`` (TSN test style)."""
    if num_frames < 1:
        raise ValueError("no frames to sample from")
    k = max(1, min(k, num_frames))
    return [start + int((i + 0.5) * num_frames / k) for i in range(k)]


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------
def open_reader(path: Path, kind: str, backend: str = "pyav") -> Any:
    from omnisource.data.decode import open_video

    return open_video(str(path), backend="rawframes" if kind == "rawframes" else backend)


def read_sampled(reader: Any, pick: Callable[[int, int], list[int]], segment: Sequence[float] | None = None
                 ) -> tuple[np.ndarray, list[int]]:
    """Decode the frames ``pick(lo, hi)`` chooses in the record's frame range.

    Headers over-state frame counts now and then (HMDB51 AVIs, damaged tails); the reader then
    raises FrameCountError with the real count and we pick again once, as the datasets do.
    """
    from omnisource.data.decode import FrameCountError

    n = None
    for attempt in range(2):
        lo, hi = segment_frame_range(reader, segment, n)
        inds = [int(i) for i in pick(lo, hi)]
        try:
            return reader.get_frames(inds), inds
        except FrameCountError as err:
            if attempt or err.actual < 1:
                raise
            n = err.actual
    raise AssertionError("unreachable")


def load_record_frames(rec: Any, data_root: str | Path | None, num_frames: int = 1,
                       min_side: int | None = None, backend: str = "pyav") -> np.ndarray:
    """uint8 ``[F, H, W, 3]`` frames representing a record.

    Images: the image (F=1). Videos: the record's ``frame_inds`` when present, else
    ``num_frames`` frames spread uniformly over its ``segment`` (or the whole video).
    """
    path = resolve_media(_get(rec, "path"), data_root)
    kind = record_kind(rec)
    if kind == "image":
        return read_image_reduced(path, min_side)[None]
    reader = open_reader(path, kind, backend)
    try:
        inds = _get(rec, "frame_inds")
        if inds:
            frames = reader.get_frames(list(inds))
        else:
            frames, _ = read_sampled(reader, lambda lo, hi: uniform_indices(hi - lo, num_frames, lo),
                                     _get(rec, "segment"))
    finally:
        reader.close()
    if min_side:
        frames = np.stack([resize_short(f, min_side) for f in frames])
    return frames


# --------------------------------------------------------------------------------------------
# preprocessing of single frames (what 2D feature extraction and image teachers see)
# --------------------------------------------------------------------------------------------
def resize_short(frame: np.ndarray, short: int) -> np.ndarray:
    """Resize so the short side is ``short`` (bilinear, aspect kept); no-op when it already is."""
    import cv2

    h, w = frame.shape[:2]
    if min(h, w) == short:
        return frame
    scale = short / min(h, w)
    size = (max(short, int(round(w * scale))), max(short, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(frame, size, interpolation=interp)


def center_crop(frame: np.ndarray, size: int, short: int | None = None) -> np.ndarray:
    """Short side -> ``short`` (default ``size * 256 / 224``), then a centred ``size`` square."""
    short = short or int(round(size * 256 / 224))
    frame = resize_short(frame, short)
    h, w = frame.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frame[y:y + size, x:x + size])


def random_crops(frame: np.ndarray, num: int, size: int, rng: np.random.Generator,
                 min_area: float = 0.4, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """``num`` random crops (area fraction in ``[min_area, 1]``, aspect jitter), each resized to
    ``size x size``: the "different crops of the same frame" that calibrate the de-dup threshold."""
    import cv2

    h, w = frame.shape[:2]
    out = np.empty((num, size, size, 3), dtype=np.uint8)
    for i in range(num):
        area = rng.uniform(min_area, 1.0) * h * w
        ar = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        cw = int(round(min(w, np.sqrt(area * ar))))
        ch = int(round(min(h, np.sqrt(area / ar))))
        cw, ch = max(cw, 1), max(ch, 1)
        x = int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
        out[i] = cv2.resize(frame[y:y + ch, x:x + cw], (size, size), interpolation=cv2.INTER_AREA)
    return out


def to_input(frames: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN,
             std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """uint8 ``[F, H, W, 3]`` RGB -> normalised float32 ``[F, 3, H, W]``."""
    x = frames.astype(np.float32)
    x -= np.asarray(mean, dtype=np.float32)
    x /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def model_norm(model: Any) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """(mean, std, input size) from ``model.meta`` with the zoo defaults."""
    meta = getattr(model, "meta", {}) or {}
    size = meta.get("input_size", 224)
    if isinstance(size, (list, tuple)):
        size = size[-1]
    return tuple(meta.get("mean", IMAGENET_MEAN)), tuple(meta.get("std", IMAGENET_STD)), int(size)


# --------------------------------------------------------------------------------------------
# decoding workers
# --------------------------------------------------------------------------------------------
def _worker_init() -> None:
    # one decoding thread per worker: the cores belong to the model and to the other workers
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover
        pass
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # pragma: no cover
        pass


@dataclass
class Loaded:
    """Result of a load function run in a worker: a payload or the reason it failed."""

    payload: Any = None
    error: str | None = None


def _safe_call(fn: Callable[[Any], Any], item: Any) -> Loaded:
    try:
        return Loaded(fn(item))
    except (DataError, InputError, OSError, ValueError, RuntimeError) as err:
        # unreadable media is data, not a bug: the stage turns it into a counted drop
        return Loaded(None, f"{type(err).__name__}: {err}")


class OrderedPool:
    """Persistent worker processes mapping a picklable function over items, results in order.

    ``window`` bounds the number of items in flight (submitted but not yet consumed), which
    bounds memory whatever the item size. ``num_workers=0`` runs inline.
    """

    def __init__(self, num_workers: int = 0, window: int | None = None):
        self.num_workers = max(0, int(num_workers))
        self.window = int(window or max(4, 4 * self.num_workers))
        self._pool = None
        if self.num_workers:
            # 'spawn', not 'fork': the parent already runs torch / OpenMP / OpenCV thread pools,
            # and a child forked while one of their locks is held deadlocks on its first use
            self._pool = mp.get_context("spawn").Pool(self.num_workers, initializer=_worker_init)

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Loaded]:
        if self._pool is None:
            for item in items:
                yield _safe_call(fn, item)
            return
        pending: collections.deque = collections.deque()
        it = iter(items)
        for item in it:
            pending.append(self._pool.apply_async(_safe_call, (fn, item)))
            if len(pending) >= self.window:
                break
        while pending:
            res = pending.popleft().get()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(self._pool.apply_async(_safe_call, (fn, nxt)))
            yield res

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "OrderedPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_END = object()


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------
def frame_features(model: Any, frames: np.ndarray, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """Globally pooled backbone features ``[N, D]`` (float32) of normalised frames ``[N, 3, H, W]``.

    Uses ``model.extract_features`` (2D recognizers: ``[N, 3, H, W] -> [N, feat_dim]``).
    """
    import torch

    if not hasattr(model, "extract_features"):
        raise InputError(f"{type(model).__name__} has no extract_features(); use a 2D model of omnisource")
    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch_size):
            part = np.ascontiguousarray(frames[i:i + batch_size])
            n = len(part)
            if n < batch_size:      # fixed batch size: a frame's features never depend on its batch
                part = np.concatenate([part, np.zeros((batch_size - n,) + part.shape[1:], part.dtype)])
            f = model.extract_features(torch.from_numpy(part).to(device))
            if f.dim() == 4:  # an unpooled map: global average pool
                f = f.mean(dim=(2, 3))
            out.append(f[:n].float().cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


def encode_f16(x: np.ndarray) -> str:
    """Compact JSON-able form of a feature vector (float16, base64): journals stay small."""
    import base64

    return base64.b64encode(np.asarray(x, dtype=np.float16).tobytes()).decode("ascii")


def decode_f16(s: str, dim: int | None = None) -> np.ndarray:
    import base64

    x = np.frombuffer(base64.b64decode(s), dtype=np.float16).astype(np.float32)
    if dim is not None and x.size % dim:
        raise ValueError(f"feature blob of {x.size} values is not a multiple of {dim}")
    return x if dim is None else x.reshape(-1, dim)
