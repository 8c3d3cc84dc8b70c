"""Readers for frame folders (mmaction2 "rawframes", incl. optical flow) and single images.

Rawframe folders hold one JPEG per frame named by a template (``img_{:05d}.jpg``,
numbered from ``start_index``, 1 in mmaction2's extraction tools). Indices passed to
:meth:`get_frames` are those absolute frame numbers, so a sampler built with the same
``start_index`` can be used unchanged.

Flow folders (``modality='flow'``) hold ``x_{:05d}.jpg`` / ``y_{:05d}.jpg`` greyscale pairs;
they are returned as uint8 ``[T, H, W, 2]`` (x, y) -- an additive extension of the
``[T, H, W, 3]`` RGB contract, since flow has two channels.
"""
from __future__ import annotations

import os
import re
import string

import numpy as np

from omnisource.errors import DataError

from .base import FrameCountError, VideoInfo, VideoReader, stack_frames
from .images import read_image


def _template_regex(template: str) -> re.Pattern[str]:
    """``img_{:05d}.jpg`` -> ``^img_(\\d+)\\.jpg$`` (one integer field)."""
    parts = []
    fields = 0
    for literal, fname, spec, conv in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if fname is not None:
            fields += 1
            parts.append(r"(\d+)")
    if fields != 1:
        raise ValueError(f"frame template {template!r} must contain exactly one field, "
                         "e.g. 'img_{:05d}.jpg'")
    return re.compile("^" + "".join(parts) + "$")


class RawframeReader(VideoReader):
    """A folder of per-frame images. ``len`` counts the files matching the template."""

    def __init__(self, path: str, template: str | None = None, start_index: int = 1,
                 modality: str = "rgb", num_frames: int | None = None,
                 max_side: int | None = None,
                 flow_templates: tuple[str, str] = ("x_{:05d}.jpg", "y_{:05d}.jpg")):
        self.path = str(path)
        if not os.path.isdir(self.path):
            raise DataError(self.path, "no such frame folder" if not os.path.exists(self.path)
                            else "is a file, not a folder of frames (a video list? read it as videos: "
                                 "--format video, or data.<split>.format: video)")
        if modality not in ("rgb", "flow"):
            raise ValueError(f"modality must be 'rgb' or 'flow', got {modality!r}")
        self.modality = modality
        self.templates = ([template or "img_{:05d}.jpg"] if modality == "rgb"
                          else list(flow_templates))
        self.start_index = int(start_index)
        self.max_side = max_side
        self._n = num_frames  # from the annotation file; verified lazily by the count
        self._counted: int | None = None
        self._info_cache: VideoInfo | None = None

    def _count(self) -> int:
        if self._counted is None:
            rx = _template_regex(self.templates[0])
            nums = []
            with os.scandir(self.path) as it:
                for e in it:
                    m = rx.match(e.name)
                    if m:
                        nums.append(int(m.group(1)))
            self._counted = len(nums)
        return self._counted

    def _num_frames(self) -> int:
        return self._count()

    def _frame_path(self, template: str, i: int) -> str:
        return os.path.join(self.path, template.format(i))

    def _load(self, i: int) -> np.ndarray:
        if self.modality == "rgb":
            f = self._frame_path(self.templates[0], i)
            if not os.path.exists(f):
                self._missing(i, f)
            return read_image(f, max_side=self.max_side)
        chans = []
        for t in self.templates:
            f = self._frame_path(t, i)
            if not os.path.exists(f):
                self._missing(i, f)
            chans.append(read_image(f, max_side=self.max_side)[..., 0])
        return np.stack(chans, axis=-1)

    def _missing(self, i: int, f: str) -> None:
        n = self._count()
        if i - self.start_index >= n:
            raise FrameCountError(self.path, f"frame {i} requested but the folder has {n} "
                                  f"frames", actual=n)
        raise DataError(f, "frame file missing")

    def _read(self, idx: np.ndarray) -> np.ndarray:
        cache: dict[int, np.ndarray] = {}
        frames = []
        for i in idx.tolist():
            if i not in cache:
                cache[i] = self._load(i)
            frames.append(cache[i])
        return stack_frames(frames, self.path)

    def _info(self) -> VideoInfo:
        if self._info_cache is None:
            n = self._count()
            h = w = 0
            if n:
                first = self._load(self.start_index) if os.path.exists(
                    self._frame_path(self.templates[0], self.start_index)) else None
                if first is not None:
                    h, w = first.shape[:2]
            self._info_cache = VideoInfo(path=self.path, num_frames=n, fps=None, width=w,
                                         height=h, codec="rawframes", pix_fmt=None,
                                         declared_frames=self._n)
        return self._info_cache


class ImageReader(VideoReader):
    """A single image seen as a one-frame video (index 0; repeats give a still clip)."""

    def __init__(self, path: str, max_side: int | None = None):
        self.path = str(path)
        self.start_index = 0
        self._img = read_image(self.path, max_side=max_side)  # fail at open, with a reason

    def _num_frames(self) -> int:
        return 1

    def _read(self, idx: np.ndarray) -> np.ndarray:
        if int(idx.max()) > 0:
            raise FrameCountError(self.path, f"frame {int(idx.max())} requested from a single "
                                  "image", actual=1)
        return np.repeat(self._img[None], len(idx), axis=0)

    def _info(self) -> VideoInfo:
        h, w = self._img.shape[:2]
        return VideoInfo(path=self.path, num_frames=1, fps=None, width=w, height=h,
                         codec="image", pix_fmt="rgb24", declared_frames=1)

