"""The reader interface shared by every decoding backend.

Why one interface: datasets, ``omnisource probe`` and the web stages must not care whether a
sample is an MP4, an AVI with a lying header, a folder of JPEG frames or a single photo. They
ask a reader for its length and for a list of absolute frame indices and get back one uint8
RGB array ``[T, H, W, 3]`` in the order asked (repeats allowed).
"""
from __future__ import annotations

import dataclasses
import errno
import os
import stat
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from omnisource.errors import DataError


ROOT_HINT_DIR = ("is a directory, not a video file (a folder of frames? read the list as rawframes: "
                 "--format rawframes, or data.<split>.format: rawframes)")


def file_problem(path: str | os.PathLike, kind: str = "video") -> tuple[str, str] | None:
    """``(category, reason)`` when ``path`` cannot be a media file at all, else None.

    One place names what a path is instead of a readable file, for every reader and report: a
    symlink loop used to be "file not found", a FIFO or ``/dev/zero`` "empty file (0 bytes)"
    (reading a FIFO would block forever, ``/dev/zero`` never ends). ``kind`` words the
    directory case ('video' suggests the rawframes format)."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            return "missing", "broken symbolic link (its target does not exist)"
        return "missing", "no such file"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink loop", "symbolic link loop (the link points back at itself)"
        if err.errno in (errno.EACCES, errno.EPERM):
            return "permission denied", "permission denied"
        return "inaccessible", err.strerror or str(err)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "folder", ROOT_HINT_DIR if kind == "video" else f"is a directory, not {kind} file"
    if stat.S_ISFIFO(mode):
        return "not a file", "a named pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "not a file", "a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "not a file", "a socket, not a regular file"
    if st.st_size == 0:
        return "empty file", "empty file (0 bytes)"
    return None


@dataclass
class VideoInfo:
    """What a container says about a video (plus what we could learn cheaply).

    ``num_frames`` is the best estimate of the number of decodable frames (exact once the
    reader has indexed the file); ``declared_frames`` is what the header claims (``None``
    when it claims nothing, as MKV/WebM do). ``width``/``height`` are *after* applying the
    rotation metadata, i.e. the shape :meth:`VideoReader.get_frames` returns.
    """

    path: str
    num_frames: int | None
    fps: float | None
    width: int
    height: int
    codec: str | None = None
    pix_fmt: str | None = None
    rotation: int = 0
    duration: float | None = None
    declared_frames: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FrameCountError(DataError):
    """A requested frame index lies past the real end of the video.

    Raised instead of silently returning a short or padded clip. ``actual`` is the number
    of frames that really exist, so the caller can re-sample its indices with that count
    (the reader also adopts it: ``len(reader) == actual`` afterwards).
    """

    def __init__(self, path: str, reason: str, actual: int):
        self.actual = int(actual)
        super().__init__(path, reason)


class VideoReader:
    """One open video (or frame folder / image). Cheap to create; decoding happens on demand.

    Subclasses implement :meth:`_num_frames`, :meth:`_read` and :meth:`_info`.
    Indices are absolute: videos count from 0, frame folders from their ``start_index``.
    """

    path: str
    start_index: int = 0

    def __len__(self) -> int:
        return self._num_frames()

    @property
    def info(self) -> VideoInfo:
        return self._info()

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return uint8 RGB ``[len(indices), H, W, 3]`` in the requested order.

        Raises :class:`FrameCountError` when an index is past the real end and
        :class:`~omnisource.errors.DataError` when the file cannot be decoded.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and int(idx.min()) < self.start_index:
            raise ValueError(f"{self.path}: frame index {int(idx.min())} is below the first "
                             f"frame index {self.start_index}")
        if idx.size == 0:
            info = self.info
            return np.zeros((0, info.height, info.width, 3), np.uint8)
        return self._read(idx)

    def close(self) -> None:  # pragma: no cover - trivial default
        pass

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- to implement -----------------------------------------------------------------
    def _num_frames(self) -> int:
        raise NotImplementedError

    def _read(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _info(self) -> VideoInfo:
        raise NotImplementedError


def stack_frames(frames: list[np.ndarray], path: str) -> np.ndarray:
    """Stack frames into ``[T, H, W, C]``; frames of another size (a stream that changes
    resolution midway) are resized to the first frame's size rather than crashing."""
    if not frames:
        raise DataError(path, "no frames requested")
    h, w = frames[0].shape[:2]
    if any(f.shape[:2] != (h, w) for f in frames):
        import cv2  # geometry library; only needed for this rare case

        frames = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
                  for f in frames]
    return np.stack(frames)


def segment_frame_range(reader: Any, segment: Sequence[float] | None, num_frames: int | None = None
                        ) -> tuple[int, int]:
    """Absolute frame range ``[lo, hi)`` covered by ``segment`` seconds (the whole video if None)."""
    n = len(reader) if num_frames is None else int(num_frames)
    start = int(getattr(reader, "start_index", 0) or 0)
    if n < 1:
        raise DataError(str(getattr(reader, "path", "?")), "video has no frames")
    if not segment:
        return start, start + n
    fps = float(getattr(reader.info, "fps", 0) or 0)
    if fps <= 0:
        raise DataError(str(getattr(reader, "path", "?")), "no frame rate: cannot map a time segment to frames")
    lo = max(0, min(n - 1, int(round(float(segment[0]) * fps))))
    hi = max(lo + 1, min(n, int(round(float(segment[1]) * fps))))
    return start + lo, start + hi
