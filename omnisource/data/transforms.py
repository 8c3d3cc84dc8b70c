"""Clip augmentations on uint8 frames, then one normalise-and-format step to the model layout.

Every transform takes and returns a uint8 array ``[M, H, W, 3]`` (RGB) plus the sample's
``np.random.Generator``; only :func:`to_model_input` makes floats. Working on uint8 until the
end keeps memory traffic 4x lower than mmaction2's float pipeline stages, and the expensive
step (resize) runs first, on the fewest pixels that still give mmaction2's result.

Semantics follow mmaction2 1.2.0 (``mmaction/datasets/transforms/processing.py``):

* **One random decision per sample.** ``RandomResizedCrop``, ``MultiScaleCrop``,
  ``RandomCrop`` and ``Flip`` draw once and apply the same box / flip to every frame of every
  clip of the sample, exactly like mmaction2 (its transforms see the whole frame list). For a
  TSN sample (3 or 8 one-frame segments) this means all segments share the crop; for a 3D
  sample with one clip it is "one crop per clip".
* **Multi-view test crops** (``ThreeCrop``, ``TenCrop``) multiply the frame axis crop-major:
  ``[view0 frames..., view1 frames..., ...]``, which is mmaction2's order and what
  :func:`to_model_input` (and mmaction2's ``FormatShape``) expect. ``TenCrop`` yields
  upper-left, its flip, upper-right, its flip, lower-left, its flip, lower-right, its flip,
  centre, its flip.
* **Sizes and rounding** are mmcv's: ``Resize(scale=(-1, 256))`` scales the short side to 256
  and the long side to ``int(long * 256 / short + 0.5)``; bilinear ``cv2.resize``.
* mmaction2 quirks kept on purpose (they change which crops are possible): ``RandomCrop``
  draws offsets with an *exclusive* upper bound (the last position is never chosen);
  ``RandomResizedCrop`` tries 10 (area, log-aspect) candidates and falls back to the centred
  square; ``MultiScaleCrop`` snaps crop sides within 2 px of ``input_size`` to it.

Crops and flips are numpy views (no copy); resize is one ``cv2.resize`` per frame (OpenCV
works per image) written straight into a preallocated output.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

from omnisource.data.workers import configure_opencv
from omnisource.errors import ConfigError, DataError

configure_opencv()  # before any cv2 work or fork: see omnisource.data.workers

__all__ = [
    "Transform", "Resize", "RandomResizedCrop", "MultiScaleCrop", "RandomCrop", "CenterCrop",
    "ThreeCrop", "TenCrop", "Flip", "to_model_input", "check_frames",
    "IMAGENET_MEAN", "IMAGENET_STD",
]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

_INTERP = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR,
           "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``int`` -> ``(v, v)``; ``(w, h)`` kept (mmaction2's ``_pair``)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 \
            and all(isinstance(v, (int, np.integer)) for v in value):
        out = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"{name} must be an int or a (w, h) pair of ints, got {value!r}")
    if min(out) < 1:
        raise ConfigError(f"{name} must be positive, got {value!r}")
    return out


def check_frames(frames: object, channels: int = 3) -> np.ndarray:
    """Validate a decoded clip: uint8 ``[M, H, W, channels]`` (3: RGB, 2: optical flow x / y)
    with M, H, W >= 1."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 \
            or frames.shape[-1] != channels or min(frames.shape[:3]) < 1:
        desc = (f"{type(frames).__name__} {getattr(frames, 'dtype', '')} "
                f"{getattr(frames, 'shape', '')}").strip()
        what = "RGB" if channels == 3 else "flow (x, y)"
        raise DataError("<frames>", f"expected uint8 {what} frames [N, H, W, {channels}], got {desc}")
    return frames


class Transform:
    """Base class: ``__call__(frames, rng) -> frames``; ``views`` multiplies the frame axis."""

    views: int = 1
    random: bool = False

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _crop(frames: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    return frames[:, y:y + h, x:x + w]


# ----------------------------------------------------------------------------- resize
class Resize(Transform):
    """Resize every frame (mmaction2 ``Resize`` with mmcv's size rules).

    ``scale``: a float factor; ``(w, h)`` with ``keep_ratio=False`` for an exact size;
    ``(-1, s)`` (or ``(s, -1)``) for "short side = s"; ``(a, b)`` with ``keep_ratio=True`` for
    "as large as possible with long side <= max(a, b) and short side <= min(a, b)". An int
    ``s`` is accepted as shorthand for ``(-1, s)``.
    """

    def __init__(self, scale: float | int | Sequence[int], keep_ratio: bool = True,
                 interpolation: str = "bilinear"):
        if isinstance(scale, (int, np.integer)) and not isinstance(scale, bool):
            scale = (-1, int(scale))
        if isinstance(scale, float):
            if scale <= 0:
                raise ConfigError(f"Resize scale factor must be positive, got {scale}")
        elif isinstance(scale, (tuple, list)) and len(scale) == 2:
            scale = tuple(int(s) for s in scale)
            if keep_ratio and min(scale) == -1:
                if max(scale) < 1:
                    raise ConfigError(f"Resize scale {scale} has no positive side")
            elif min(scale) < 1:
                raise ConfigError(f"Resize scale sides must be positive (or -1 for 'keep "
                                  f"ratio'), got {scale}")
        else:
            raise ConfigError(f"Resize scale must be a float, an int or a (w, h) pair, "
                              f"got {scale!r}")
        if interpolation not in _INTERP:
            raise ConfigError(f"interpolation must be one of {sorted(_INTERP)}, "
                              f"got {interpolation!r}")
        self.scale = scale
        self.keep_ratio = bool(keep_ratio)
        self.interpolation = interpolation

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """``(new_h, new_w)`` for an ``h x w`` frame (mmcv ``rescale_size`` rounding)."""
        if not self.keep_ratio:
            new_w, new_h = self.scale  # type: ignore[misc]
            return int(new_h), int(new_w)
        if isinstance(self.scale, float):
            factor = self.scale
        else:
            long_max = max(self.scale)
            short_max = min(self.scale)
            if short_max == -1:
                long_max, short_max = float("inf"), long_max
            factor = min(long_max / max(h, w), short_max / min(h, w))
        return int(h * float(factor) + 0.5), int(w * float(factor) + 0.5)

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        m, h, w = frames.shape[:3]
        new_h, new_w = self.output_size(h, w)
        if (new_h, new_w) == (h, w):
            return frames
        if new_h < 1 or new_w < 1:
            raise DataError("<frames>", f"resizing {w}x{h} frames with {self.scale} gives "
                                        f"an empty {new_w}x{new_h} image")
        out = np.empty((m, new_h, new_w, frames.shape[-1]), dtype=np.uint8)
        code = _INTERP[self.interpolation]
        for i in range(m):
            cv2.resize(frames[i], (new_w, new_h), dst=out[i], interpolation=code)
        return out


# ----------------------------------------------------------------------------- random crops
class RandomResizedCrop(Transform):
    """Inception-style crop (mmaction2 ``RandomResizedCrop``): random area and aspect ratio.

    Draws ``max_attempts`` candidates at once (area uniform in ``area_range`` of the frame,
    aspect ratio log-uniform in ``aspect_ratio_range``), takes the first that fits and places
    it uniformly; if none fits, the centred square of the short side. The crop keeps its own
    size: follow it by ``Resize((224, 224), keep_ratio=False)`` as the zoo configs do.
    """

    random = True

    def __init__(self, area_range: Sequence[float] = (0.08, 1.0),
                 aspect_ratio_range: Sequence[float] = (3 / 4, 4 / 3), max_attempts: int = 10):
        area_range = tuple(float(a) for a in area_range)
        aspect_ratio_range = tuple(float(a) for a in aspect_ratio_range)
        if len(area_range) != 2 or not 0 < area_range[0] <= area_range[1] <= 1:
            raise ConfigError(f"area_range must satisfy 0 < min <= max <= 1, got {area_range}")
        if len(aspect_ratio_range) != 2 or not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
            raise ConfigError(f"aspect_ratio_range must satisfy 0 < min <= max, "
                              f"got {aspect_ratio_range}")
        self.area_range = area_range
        self.aspect_ratio_range = aspect_ratio_range
        self.max_attempts = int(max_attempts)

    def crop_box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(x, y, crop_w, crop_h)``."""
        area = h * w
        lo, hi = self.aspect_ratio_range
        ratios = np.exp(rng.uniform(np.log(lo), np.log(hi), size=self.max_attempts))
        areas = rng.uniform(*self.area_range, size=self.max_attempts) * area
        cand_w = np.round(np.sqrt(areas * ratios)).astype(np.int64)
        cand_h = np.round(np.sqrt(areas / ratios)).astype(np.int64)
        for cw, ch in zip(cand_w.tolist(), cand_h.tolist()):
            if ch <= h and cw <= w:
                x = int(rng.integers(0, w - cw, endpoint=True))
                y = int(rng.integers(0, h - ch, endpoint=True))
                return x, y, cw, ch
        side = min(h, w)
        return (w - side) // 2, (h - side) // 2, side, side

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _crop(frames, *self.crop_box(frames.shape[1], frames.shape[2], rng))


class MultiScaleCrop(Transform):
    """TSN's multi-scale crop (mmaction2 ``MultiScaleCrop``).

    Crop sides are ``int(short_side * s)`` for ``s`` in ``scales``; a (w, h) pair is drawn
    uniformly among those whose scale levels differ by at most ``max_wh_scale_gap``; sides
    within 2 px of ``input_size`` snap to it. With ``random_crop=False`` the box is one of 5
    fixed positions (corners and centre on a grid of quarter steps) or 13 with
    ``num_fixed_crops=13`` (adds the edge centres and the four quarter points).
    """

    random = True

    def __init__(self, input_size: int | Sequence[int], scales: Sequence[float] = (1,),
                 max_wh_scale_gap: int = 1, random_crop: bool = False, num_fixed_crops: int = 5):
        self.input_size = _pair(input_size, "input_size")
        if not scales or any(not 0 < float(s) <= 1 for s in scales):
            raise ConfigError(f"MultiScaleCrop scales must be in (0, 1], got {scales!r}")
        if num_fixed_crops not in (5, 13):
            raise ConfigError(f"num_fixed_crops must be 5 or 13, got {num_fixed_crops!r}")
        self.scales = tuple(scales)
        self.max_wh_scale_gap = int(max_wh_scale_gap)
        self.random_crop = bool(random_crop)
        self.num_fixed_crops = int(num_fixed_crops)

    def candidate_sizes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Possible ``(crop_w, crop_h)`` in mmaction2's enumeration order (after snapping)."""
        base = min(h, w)
        sides = [int(base * s) for s in self.scales]
        out = []
        for i, ch in enumerate(sides):
            for j, cw in enumerate(sides):
                if abs(i - j) <= self.max_wh_scale_gap:
                    size = [cw, ch]
                    for k in range(2):
                        if abs(size[k] - self.input_size[k]) < 3:
                            size[k] = self.input_size[k]
                    out.append((size[0], size[1]))
        return out

    def fixed_offsets(self, h: int, w: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
        """The fixed ``(x, y)`` positions in mmaction2's order."""
        ws, hs = (w - crop_w) // 4, (h - crop_h) // 4
        offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
        if self.num_fixed_crops == 13:
            offsets += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                        (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
        return offsets

    def crop_box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        sizes = self.candidate_sizes(h, w)
        cw, ch = sizes[int(rng.integers(len(sizes)))]
        if cw > w or ch > h:
            raise DataError("<frames>", f"MultiScaleCrop box {cw}x{ch} does not fit "
                                        f"{w}x{h} frames (input_size {self.input_size})")
        if self.random_crop:
            x = int(rng.integers(0, w - cw, endpoint=True))
            y = int(rng.integers(0, h - ch, endpoint=True))
        else:
            offsets = self.fixed_offsets(h, w, cw, ch)
            x, y = offsets[int(rng.integers(len(offsets)))]
        return x, y, cw, ch

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _crop(frames, *self.crop_box(frames.shape[1], frames.shape[2], rng))


class RandomCrop(Transform):
    """Square random crop of side ``size`` (mmaction2 ``RandomCrop``, used by C3D)."""

    random = True

    def __init__(self, size: int):
        self.size = _pair(size, "size")[0]

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = frames.shape[1:3]
        s = self.size
        if s > h or s > w:
            raise DataError("<frames>", f"RandomCrop {s} larger than {w}x{h} frames")
        # mmaction2 uses np.random.randint(0, h - s): the last offset is never drawn
        y = int(rng.integers(0, h - s)) if h > s else 0
        x = int(rng.integers(0, w - s)) if w > s else 0
        return _crop(frames, x, y, s, s)


# ----------------------------------------------------------------------------- fixed crops
def _fit(name: str, crop_w: int, crop_h: int, w: int, h: int) -> None:
    if crop_w > w or crop_h > h:
        raise DataError("<frames>", f"{name} of {crop_w}x{crop_h} does not fit {w}x{h} "
                                    "frames; resize first or lower the crop size")


class CenterCrop(Transform):
    """Centred crop, ``crop_size`` an int or ``(w, h)``; offsets ``(W - w) // 2``."""

    def __init__(self, crop_size: int | Sequence[int]):
        self.crop_size = _pair(crop_size, "crop_size")

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = frames.shape[1:3]
        cw, ch = self.crop_size
        _fit("CenterCrop", cw, ch, w, h)
        return _crop(frames, (w - cw) // 2, (h - ch) // 2, cw, ch)


class ThreeCrop(Transform):
    """Three crops along the long side: left/top, right/bottom, middle (mmaction2 order).

    One crop side must equal the frame side (the zoo uses ``Resize((-1, 256))`` then
    ``ThreeCrop(256)``). Output is crop-major: ``3 * M`` frames.
    """

    views = 3

    def __init__(self, crop_size: int | Sequence[int]):
        self.crop_size = _pair(crop_size, "crop_size")

    def offsets(self, h: int, w: int) -> list[tuple[int, int]]:
        cw, ch = self.crop_size
        if ch == h:
            step = (w - cw) // 2
            return [(0, 0), (2 * step, 0), (step, 0)]
        if cw == w:
            step = (h - ch) // 2
            return [(0, 0), (0, 2 * step), (0, step)]
        raise DataError("<frames>", f"ThreeCrop {cw}x{ch} needs one side equal to the "
                                    f"frame's {w}x{h}; resize the short side to the crop size")

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = frames.shape[1:3]
        cw, ch = self.crop_size
        _fit("ThreeCrop", cw, ch, w, h)
        return np.concatenate([_crop(frames, x, y, cw, ch) for x, y in self.offsets(h, w)])


class TenCrop(Transform):
    """Four corners and centre, each followed by its horizontal flip (mmaction2 order)."""

    views = 10

    def __init__(self, crop_size: int | Sequence[int]):
        self.crop_size = _pair(crop_size, "crop_size")

    def offsets(self, h: int, w: int) -> list[tuple[int, int]]:
        cw, ch = self.crop_size
        ws, hs = (w - cw) // 4, (h - ch) // 4
        return [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = frames.shape[1:3]
        cw, ch = self.crop_size
        _fit("TenCrop", cw, ch, w, h)
        m = frames.shape[0]
        out = np.empty((10 * m, ch, cw, frames.shape[-1]), dtype=np.uint8)
        for k, (x, y) in enumerate(self.offsets(h, w)):
            crop = _crop(frames, x, y, cw, ch)
            out[2 * k * m:(2 * k + 1) * m] = crop
            out[(2 * k + 1) * m:(2 * k + 2) * m] = crop[:, :, ::-1]
        return out


# ----------------------------------------------------------------------------- flip
class Flip(Transform):
    """Flip all frames of the sample with probability ``flip_ratio`` (one draw per sample)."""

    random = True

    def __init__(self, flip_ratio: float = 0.5, direction: str = "horizontal", flow: bool = False):
        if not 0 <= float(flip_ratio) <= 1:
            raise ConfigError(f"flip_ratio must be in [0, 1], got {flip_ratio!r}")
        if direction not in ("horizontal", "vertical"):
            raise ConfigError(f"Flip direction must be 'horizontal' or 'vertical', "
                              f"got {direction!r}")
        self.flip_ratio = float(flip_ratio)
        self.direction = direction
        self.flow = bool(flow)

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # draw even when flip_ratio is 0 or 1 so the random stream does not depend on it
        if rng.random() < self.flip_ratio:
            out = frames[:, :, ::-1] if self.direction == "horizontal" else frames[:, ::-1]
            if self.flow:
                # a mirrored flow field moves the other way along the flipped axis: invert that
                # component (x for horizontal). mmaction2 1.2.0 instead inverts every other
                # whole [H, W, 2] frame (its flip was written for x / y as separate frames)
                out = out.copy()
                c = 0 if self.direction == "horizontal" else 1
                out[..., c] = 255 - out[..., c]
            return out
        return frames


# ----------------------------------------------------------------------------- format
def to_model_input(frames: np.ndarray, layout: str, clip_len: int,
                   mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD, stack_clip_channels: bool = False) -> torch.Tensor:
    """uint8 ``[M, H, W, 3]`` -> normalised float32 in the model layout.

    ``'2d'``: ``[M, 3, H, W]`` (mmaction2 ``FormatShape('NCHW')``; segments and views stacked).
    ``'3d'``: ``[M // clip_len, 3, clip_len, H, W]`` (``FormatShape('NCTHW')``; views are
    crop-major then clip). Normalisation is ``(x - mean) / std`` in float32, the same
    arithmetic as mmaction2's ``ActionDataPreprocessor``, done once on the final (small) crop.

    Why numpy and not torch here: torch parallelises element-wise ops over its intra-op
    thread pool, and in a process that also decodes (0 DataLoader workers) or on a busy
    machine those threads spin against each other -- measured 20 ms CPU instead of 1.5 ms
    for a TSN-8 clip. numpy runs the same IEEE float32 ops single-threaded (bit-identical
    results), reading crop / flip views in place (one strided cast, no extra copy).
    """
    m, h, w, c = frames.shape
    if len(mean) != c or len(std) != c:
        raise ConfigError(f"{c}-channel frames need {c} mean / std values, got {len(mean)} / {len(std)}")
    if layout == "2d":
        src = frames.transpose(0, 3, 1, 2)
        shape: tuple[int, ...] = (m, c, h, w)
        view: tuple[int, ...] = (1, c, 1, 1)
    elif layout == "3d":
        if m % clip_len:
            raise DataError("<frames>", f"{m} frames is not a whole number of "
                                        f"{clip_len}-frame clips")
        src = frames.reshape(m // clip_len, clip_len, h, w, c).transpose(0, 4, 1, 2, 3)
        shape = (m // clip_len, c, clip_len, h, w)
        view = (1, c, 1, 1, 1)
    else:
        raise ConfigError(f"layout must be '2d' or '3d', got {layout!r}")
    out = np.empty(shape, dtype=np.float32)
    np.copyto(out, src, casting="unsafe")  # uint8 -> float32 is exact
    out -= np.asarray(mean, dtype=np.float32).reshape(view)
    out /= np.asarray(std, dtype=np.float32).reshape(view)
    if layout == "2d" and stack_clip_channels and clip_len > 1:
        # TSN on flow (mmaction2 FormatShape('NCHW') with modality Flow): each segment's clip_len
        # frames become one input of clip_len * c channels, x0 y0 x1 y1 ...
        if m % clip_len:
            raise DataError("<frames>", f"{m} frames is not a whole number of {clip_len}-frame clips")
        out = out.reshape(m // clip_len, clip_len * c, h, w)
    return torch.from_numpy(out)
