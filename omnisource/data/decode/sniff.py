"""What a file *is* (image or video, and its container), from its bytes: one rule for every stage.

Why one module: the check stage, probe, ingest and training used to disagree. Animated GIFs were
read as videos by the decoders and counted readable by ``data check``, then dropped by ingest as
``not_video``; a PNG renamed ``.mp4`` was "readable" because FFmpeg opens it as a one-frame
stream. Every stage now asks :func:`media_kind`:

* the kind and format come from magic numbers (never the extension or a Content-Type);
* a GIF with two or more frames is a **video** (web video crawls carry them, and the decoders
  read them as such); a GIF with one frame is an **image** (one whose frames cannot be walked
  counts as a video, so the video readers name its damage);
* anything else an image format sniffs as is an image, and a still image listed as a video is
  named as such ("a still image (png), not a video").
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

__all__ = ["SNIFF_BYTES", "sniff", "sniff_file", "MediaKind", "media_kind", "gif_frame_count"]

SNIFF_BYTES = 512   # enough for three MPEG-TS sync bytes


def sniff(head: bytes) -> tuple[str, str, str] | None:
    """``(kind, format, extension)`` from the first bytes of a file, or None when not media.

    Formats are recognised by their magic numbers (the same signatures ``file(1)`` uses).
    GIFs are reported as images here (the header cannot tell animated from still);
    :func:`media_kind` settles them by counting frames.
    """
    h = head
    if h.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg", ".jpg"
    if h.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png", ".png"
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "gif", ".gif"
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return "image", "webp", ".webp"
    if h[:2] == b"BM" and len(h) >= 14:
        return "image", "bmp", ".bmp"
    if h[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "tiff", ".tif"
    if h[4:8] == b"ftyp":
        brand = h[8:12]
        if brand in (b"avif", b"avis"):
            return "image", "avif", ".avif"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
            return "image", "heif", ".heic"
        if brand.startswith(b"qt"):
            return "video", "mov", ".mov"
        if brand.startswith(b"3g"):
            return "video", "3gp", ".3gp"
        return "video", "mp4", ".mp4"
    if h[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "video", "mov", ".mov"
    if h[:4] == b"\x1a\x45\xdf\xa3":
        fmt = "webm" if b"webm" in h[:64] else "mkv"
        return "video", fmt, "." + fmt
    if h[:4] == b"RIFF" and h[8:12] == b"AVI ":
        return "video", "avi", ".avi"
    if h[:3] == b"FLV":
        return "video", "flv", ".flv"
    if h[:4] == b"\x00\x00\x01\xba":
        return "video", "mpeg", ".mpg"
    if h[:4] == b"\x30\x26\xb2\x75":
        return "video", "asf", ".wmv"
    if h[:4] == b"OggS":
        return "video", "ogg", ".ogv"
    if len(h) > 376 and h[0] == h[188] == h[376] == 0x47:
        # MPEG-TS: a sync byte every 188 bytes (three in a row; one 'G' alone is too weak)
        return "video", "mpegts", ".ts"
    return None


def sniff_file(path: str | Path) -> tuple[str, str, str] | None:
    with open(path, "rb") as fh:
        return sniff(fh.read(SNIFF_BYTES))


class MediaKind(NamedTuple):
    kind: str          # 'image' | 'video'
    format: str        # 'jpeg', 'png', 'gif', 'mp4', 'mkv', ...
    extension: str     # the canonical extension of that format ('.jpg', '.mp4', ...)


def gif_frame_count(path: str | Path, stop_at: int = 2) -> int:
    """Frames of a GIF, counted up to ``stop_at`` (only "one or more than one" matters here).

    Pillow walks the frame headers without decoding pixels; a damaged file counts what could
    be walked (0 when not even the first frame header parses)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            n = 1
            while n < stop_at:
                try:
                    im.seek(n)
                except EOFError:
                    break
                n += 1
            return n
    except Exception:   # a broken GIF: the readers report why (see images.gif_reason)
        return 0


def media_kind(path: str | Path, head: bytes | None = None) -> MediaKind | None:
    """Image or video (and format) of ``path``, or None when it is no media format we know.

    ``head`` (the file's first :data:`SNIFF_BYTES` bytes) saves a read when the caller has it.
    OSError propagates (missing, unreadable): callers name those themselves."""
    if head is None:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    s = sniff(head)
    if s is None:
        return None
    kind, fmt, ext = s
    if fmt == "gif" and gif_frame_count(path) != 1:
        kind = "video"   # animated, or too broken to tell: the video readers say why
    return MediaKind(kind, fmt, ext)
