"""Still images (web images, extracted frames) -> uint8 RGB, robust to what the web serves.

Why Pillow: it handles EXIF orientation, CMYK (including Adobe's inverted APP14 JPEGs),
palette/transparency, 16-bit PNGs and decompression-bomb limits, and its ``draft`` mode lets
libjpeg decode a JPEG directly at 1/2, 1/4 or 1/8 scale, which is what the teacher-filter
stage needs to score millions of web images quickly (``max_side``).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from omnisource.errors import DataError

log = logging.getLogger("omnisource.data.decode")

# Decoded-pixel cap for one image (width x height after any JPEG draft reduction). Pillow's own
# bomb guard only warns below twice its 89 Mpx limit, so an 11000 x 11000 PNG of 353 kB was
# decoded at 2 GB per worker. 64 Mpx (e.g. 8000 x 8000) holds every real photo; set
# OMNISOURCE_MAX_IMAGE_PIXELS (0 = no cap) or pass ``max_pixels`` to change it.
MAX_IMAGE_PIXELS = int(os.environ.get("OMNISOURCE_MAX_IMAGE_PIXELS", 64_000_000))


def _check_pixels(path: str, im, cap: int | None, reduction: int = 1) -> None:
    cap = MAX_IMAGE_PIXELS if cap is None else cap
    w, h = im.size
    if cap and w * h / reduction > cap:
        raise DataError(path, f"image of {w} x {h} = {w * h / 1e6:.0f} Mpx is over the decode cap of "
                              f"{cap / 1e6:.0f} Mpx (OMNISOURCE_MAX_IMAGE_PIXELS raises it)")


def _to_rgb_array(im) -> np.ndarray:
    """Any Pillow mode -> contiguous uint8 HxWx3. Alpha is dropped (as OpenCV/mmcv's
    ``imread`` does, so models trained on either see the same pixels)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64 if mode == "I" else np.uint16)
        if mode != "I" or arr.max(initial=0) > 255:
            arr = arr / 257.0 if mode != "I" else arr * (255.0 / max(float(arr.max()), 1.0))
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode == "F":
        arr = np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def read_image(path: str | Path, max_side: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Read one image as uint8 RGB ``[H, W, 3]``, EXIF-oriented.

    ``max_side``: shrink so that the longer side is at most this many pixels; JPEGs are
    decoded at a reduced DCT scale first (Pillow ``draft``), which is several times faster
    than decoding full size and resizing. Unreadable input (missing, truncated, not an
    image, decompression bomb, over ``max_pixels`` -- default :data:`MAX_IMAGE_PIXELS` --
    once decoded) raises :class:`DataError` naming the file and the reason.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = str(path)
    from .base import file_problem

    bad = file_problem(path, kind="an image")
    if bad is not None:
        raise DataError(path, bad[1])
    try:
        with warnings.catch_warnings():
            # a DecompressionBombWarning (between 1x and 2x the pixel limit) is not an error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if max_side is not None:
                    if max_side <= 0:
                        raise ValueError(f"max_side must be positive, got {max_side}")
                    # a JPEG is decoded at down to 1/8 scale (draft): the cap applies to that
                    _check_pixels(path, im, max_pixels, 64 if im.format == "JPEG" else 1)
                    # thumbnail() uses draft() for JPEG, then a reducing resize
                    im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR,
                                 reducing_gap=2.0)
                else:
                    _check_pixels(path, im, max_pixels)
                    im.load()
                try:
                    oriented = ImageOps.exif_transpose(im)
                except Exception as err:  # damaged EXIF block: pixels are still fine
                    log.debug("%s: ignoring unreadable EXIF: %s", path, err)
                    oriented = im
                return _to_rgb_array(oriented if oriented is not None else im)
    except Image.DecompressionBombError as err:
        raise DataError(path, f"decompression bomb refused: {err}") from None
    except UnidentifiedImageError:
        raise DataError(path, "not a recognised image format") from None
    except ValueError:
        raise
    except (OSError, SyntaxError, EOFError, MemoryError) as err:
        raise DataError(path, f"truncated or corrupt image: {err}") from None
    except Exception as err:  # Pillow plugins raise assorted types on garbage input
        raise DataError(path, f"cannot decode image: {type(err).__name__}: {err}") from None


def gif_reason(path: str | Path) -> str | None:
    """Pillow's reason for a GIF that FFmpeg cannot decode, or None.

    GIFs are read as videos (they may be animated), so a broken one fails in FFmpeg with "no frame
    could be decoded"; Pillow says why ("decompression bomb refused: Image size (4364696535
    pixels) exceeds limit ..." for Pillow's own bomb test file). None for other files, or when
    Pillow finds nothing wrong."""
    if Path(path).suffix.lower() != ".gif":
        return None
    try:
        read_image(path, max_side=64)
    except DataError as err:
        return err.reason
    return None


def read_image_reduced(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """RGB uint8 image; JPEGs decoded at a reduced DCT scale whose short side is >= ``min_side``.

    A web photo is often 2000-4000 px wide while the teacher needs a 256 px short side; letting
    libjpeg decode at 1/2, 1/4 or 1/8 scale (Pillow ``draft``) cuts decoding time several-fold
    and never produces fewer pixels than asked for, so the following resize is unchanged in
    kind. Anything but a plain readable JPEG goes through :func:`read_image` (EXIF orientation,
    CMYK/greyscale, corrupt-file errors). Used by the teacher filter (web images) and the
    report thumbnails.
    """
    if min_side is None:
        return read_image(path)
    fast = _read_jpeg_draft(path, int(min_side))
    if fast is not None:
        return fast
    # not a JPEG, or something unusual about it: the shared reader (its errors name the reason)
    return read_image(path)


def _read_jpeg_draft(path: str | Path, min_side: int) -> np.ndarray | None:
    """JPEG decoded by libjpeg at the smallest DCT scale (1/2, 1/4, 1/8) keeping the short side
    >= ``min_side``, EXIF-oriented, RGB. None when the file is not a plain readable JPEG.

    Measured on a 1600x1200 photo: 15 ms instead of 40 ms for a full decode; that is what keeps
    decoding behind the teacher's forward pass.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                return None
            w, h = im.size
            short = min(w, h)
            if short <= 0:
                return None
            if short > min_side:
                im.draft("RGB", (int(np.ceil(w * min_side / short)), int(np.ceil(h * min_side / short))))
            im.load()
            try:
                im = ImageOps.exif_transpose(im) or im
            except Exception:  # noqa: BLE001 - a damaged EXIF block: the pixels are fine
                pass
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im)
    except Exception:  # noqa: BLE001 - truncated / bomb / odd files: read_image reports them
        return None
