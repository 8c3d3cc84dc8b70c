"""``probe``: what is in a media file and can we read it -- plus a JSONL cache of the answers.

Why a cache: counting frames exactly (or checking that every packet decodes) costs a pass
over the file. A dataset of 300k clips should pay that once (``omnisource probe --decode
--out probes.jsonl``), not at every training start; datasets read the manifest with
:func:`load_probe_cache`.

Cache format (JSONL, written atomically): first line ``{"format": "omnisource-probe",
"version": 1}``, then one object per file with the keys of :func:`probe`.
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from omnisource.errors import DataError, InputError
from omnisource.utils.io import atomic_open

log = logging.getLogger("omnisource.data.decode")

CACHE_FORMAT = "omnisource-probe"
CACHE_VERSION = 1
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".mpo", ".ppm",
              ".pgm", ".jfif"}


def file_kind(path: str | Path) -> str:
    """'rawframes' for a folder, else the project's one rule (:func:`.sniff.media_kind`: the
    bytes decide; an animated GIF is a video, a one-frame GIF an image). A file that is
    missing, unreadable or of no format we sniff falls back to its extension (still-image
    extensions: 'image', anything else: 'video', which the reader then names the problem of)."""
    from .sniff import media_kind

    p = Path(path)
    if p.is_dir():
        return "rawframes"
    try:
        mk = media_kind(p) if p.is_file() else None
    except OSError:
        mk = None
    if mk is not None:
        return mk.kind
    return "image" if p.suffix.lower() in IMAGE_EXTS else "video"


def _blank(path: str, kind: str) -> dict[str, Any]:
    st = None
    try:
        st = os.stat(path)
    except OSError:
        pass
    return {"path": path, "abspath": os.path.abspath(path), "kind": kind, "readable": False,
            "reason": None, "frames": None, "frames_exact": False, "declared_frames": None,
            "fps": None, "width": None, "height": None, "codec": None, "pix_fmt": None,
            "rotation": 0, "duration": None, "decoded": False, "damaged_frames": 0,
            "access": None, "keyframes": None, "access_note": None,
            "size_bytes": st.st_size if st else None, "mtime": st.st_mtime if st else None}


def _access(reader: Any) -> dict[str, Any]:
    """How a sparse read reaches a frame (PyAV reader only), so a slow dataset can be explained:
    ``seek`` (timestamps name frames: jump to the keyframe, skip what is not needed),
    ``seek-checked`` (frames counted in decode order, jumps to keyframes checked while
    decoding) or ``sequential`` (decoded from the start every time; ``access_note`` says why).
    """
    index = getattr(reader, "_index", None)
    if index is None:
        return {}
    return {"access": index.access, "keyframes": len(index.key_dpos) or None,
            "access_note": index.reason or None}


def _full_decode_count(path: str) -> tuple[int, int]:
    """Decode every frame (no RGB conversion): (frames output, packets that failed)."""
    from .pyav_reader import _first_video_stream, _open_container

    c = _open_container(path)
    n = errors = 0
    try:
        s = _first_video_stream(c)
        s.thread_type = "AUTO"
        cc = s.codec_context
        it = c.demux(s)
        while True:
            try:
                packet = next(it)
            except StopIteration:
                break
            except Exception:
                errors += 1  # demux error: the rest of the file is unreadable
                break
            try:
                n += len(cc.decode(packet if packet.size else None))
            except Exception:
                errors += 1
        try:
            n += len(cc.decode(None))
        except Exception:
            pass
    finally:
        c.close()
    return n, errors


def probe(path: str | Path, decode: bool = False, backend: str = "pyav",
          index_store: str | Path | None = None) -> dict[str, Any]:
    """Describe one file; never raises for unreadable media (``readable=False`` + ``reason``).

    ``index_store``: also keep the video's demux index in this :mod:`.index_store` file, so
    training reads it back instead of demuxing the file again.

    Without ``decode`` this reads metadata, indexes the packets (no decoding) for an exact
    count where the container allows, and decodes the first frame (rotation, pixel format).
    With ``decode`` every frame is decoded: ``frames`` is then the exact decodable count and
    any damaged packet makes the file unreadable-with-reason.
    """
    from . import open_video
    from .images import gif_reason

    path = str(path)
    kind = file_kind(path)
    rec = _blank(path, kind)
    try:
        if kind == "image":
            from .images import read_image

            img = read_image(path)  # first: its errors are the clear ones
            from PIL import Image

            with Image.open(path) as im:  # header only: the file format and stored pixel mode
                fmt, mode = (im.format or "image").lower(), im.mode
            rec.update(frames=1, frames_exact=True, height=int(img.shape[0]),
                       width=int(img.shape[1]), codec=fmt, pix_fmt=mode, readable=True,
                       decoded=True)
            return rec
        if kind == "rawframes":
            reader = open_video(path, backend="rawframes")
        else:
            reader = open_video(path, backend=backend, index_store=index_store)
        with reader:
            info = reader.info
            rec.update({k: v for k, v in info.to_dict().items() if k not in ("path", "num_frames")})
            n = len(reader)
            rec["frames"] = n
            rec["frames_exact"] = kind == "rawframes"
            if kind == "video":
                rec["frames_exact"] = getattr(reader, "_index", None) is not None
            if n == 0:
                raise DataError(path, "no frames (empty folder or no file matches the template)")
            reader.get_frames([reader.start_index])  # the first frame must decode
            rec["readable"] = True
            rec.update(_access(reader))
        if decode and kind == "video":
            got, errors = _full_decode_count(path)
            rec.update(frames=got, frames_exact=True, decoded=True, damaged_frames=errors)
            if got == 0:
                rec.update(readable=False, reason="no frame could be decoded")
            elif errors:
                rec.update(readable=False, reason=f"{errors} damaged packet(s); {got} of "
                           f"{n} indexed frames decodable")
            elif got != n:
                rec["reason"] = f"container indexes {n} frames, {got} decodable"
        elif decode and kind == "rawframes":
            with open_video(path, backend="rawframes") as r:
                for i in range(r.start_index, r.start_index + len(r)):
                    r.get_frames([i])
            rec["decoded"] = True
    except DataError as err:
        rec.update(readable=False, reason=gif_reason(path) or err.reason)
    except Exception as err:  # a probe must report, never crash, whatever the file holds
        rec.update(readable=False, reason=f"{type(err).__name__}: {err}")
    return rec


def probe_many(paths: Iterable[str | Path], decode: bool = False, workers: int = 2,
               backend: str = "pyav", progress: bool | None = None,
               index_store: str | Path | None = None) -> list[dict[str, Any]]:
    """Probe many files in parallel threads (FFmpeg releases the GIL while decoding);
    results in input order, with a tqdm bar when attached to a terminal."""
    from tqdm import tqdm

    from omnisource.utils.progress import progress_enabled

    progress = progress_enabled(progress)
    paths = [str(p) for p in paths]
    out: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda p: probe(p, decode=decode, backend=backend,
                                            index_store=index_store), paths)
        # no tqdm object at all when quiet: its monitor thread would outlive this call, and a
        # live helper thread at fork time is what hangs forked DataLoader workers
        bar = tqdm(results, total=len(paths), desc="probe") if progress else results
        for rec in bar:
            out.append(rec)
    return out


def load_probe_cache(path: str | Path, check_stale: bool = False) -> dict[str, dict[str, Any]]:
    """Read a probe manifest: ``{path: record}`` keyed by the path as probed *and* by its
    absolute path. ``check_stale`` drops records whose file size or mtime changed."""
    path = Path(path)
    if not path.exists():
        raise InputError("probe cache not found", file=path)
    out: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"malformed JSON: {err.msg}", file=path, line=lineno) from None
            if not isinstance(rec, dict):
                raise InputError("expected a JSON object", file=path, line=lineno)
            if rec.get("format") == CACHE_FORMAT:
                if int(rec.get("version", 0)) > CACHE_VERSION:
                    raise InputError(f"probe cache version {rec.get('version')} is newer than "
                                     f"this omnisource ({CACHE_VERSION})", file=path, line=lineno)
                continue
            if "path" not in rec:
                raise InputError("record without 'path'", file=path, line=lineno)
            if check_stale and not _fresh(rec):
                continue
            out[rec["path"]] = rec
            if rec.get("abspath"):
                out[rec["abspath"]] = rec
    return out


def _fresh(rec: dict[str, Any]) -> bool:
    try:
        st = os.stat(rec.get("abspath") or rec["path"])
    except OSError:
        return False
    return st.st_size == rec.get("size_bytes") and abs(st.st_mtime - (rec.get("mtime") or 0)) < 1e-3


def write_probe_cache(path: str | Path, records: Iterable[dict[str, Any]], merge: bool = True) -> int:
    """Write records atomically; with ``merge`` keep earlier records of other files.
    Returns the number of records written."""
    path = Path(path)
    merged: dict[str, dict[str, Any]] = {}
    if merge and path.exists():
        for key, rec in load_probe_cache(path).items():
            merged[rec.get("abspath") or rec["path"]] = rec
    for rec in records:
        merged[rec.get("abspath") or rec["path"]] = rec
    with atomic_open(path, "w") as fh:
        fh.write(json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION}) + "\n")
        for rec in merged.values():
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
    return len(merged)
