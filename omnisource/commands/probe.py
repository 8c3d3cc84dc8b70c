"""Describe media files: frames, fps, size, codec, and whether (or why not) they are readable.

Fast by default: container metadata, a demux-only packet count (exact for MP4/MKV/WebM and,
by skipping MPEG-4 placeholder packets, for HMDB51-style AVIs) and one decoded frame.
``--decode`` decodes every frame to count exactly and to find damaged streams.

``--out probes.jsonl`` stores the results (atomically, merged with what the file already
holds) so that datasets read counts from the cache instead of probing at every start
(``omnisource.data.decode.load_probe_cache``). ``--index-store idx.sqlite`` also keeps each
video's demux index (see ``omnisource.data.decode.index_store``) for training to read back.

Exit status: 0 even when some files are unreadable (they are reported, one line each) --
probing is how you *find* broken files; ``--strict`` exits 1 if any file is unreadable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HELP = "show frames / fps / size / codec / readability of media files (optionally cache them)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="videos, images or rawframe folders; a folder given with "
                             "--recursive is searched for media files instead")
    parser.add_argument("--decode", action="store_true",
                        help="decode every frame: exact count and damaged-stream detection")
    parser.add_argument("--out", metavar="JSONL", help="write/merge results into this cache")
    parser.add_argument("--index-store", metavar="SQLITE",
                        help="also keep each video's demux index in this file; give the same "
                             "file to training (data option index_store, or the "
                             "OMNISOURCE_INDEX_STORE environment variable) and no read demuxes "
                             "a whole video again")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    parser.add_argument("--backend", default="pyav", choices=["pyav", "decord"],
                        help="video decoder (default: pyav)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="parallel probes (threads; default: min(4, CPUs))")
    parser.add_argument("--recursive", action="store_true",
                        help="expand folders into the media files below them")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when any file is unreadable")


_MEDIA_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif", ".m4v", ".mpg", ".mpeg",
               ".flv", ".wmv", ".3gp", ".ts", ".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _expand(files: list[str], recursive: bool) -> list[str]:
    out: list[str] = []
    for f in files:
        if recursive and os.path.isdir(f):
            for root, _dirs, names in os.walk(f):
                out.extend(os.path.join(root, n) for n in sorted(names)
                           if Path(n).suffix.lower() in _MEDIA_EXTS)
        else:
            out.append(f)
    return out


def _line(rec: dict) -> str:
    if not rec["readable"]:
        return f"{rec['path']}: UNREADABLE: {rec['reason']}"
    fps = f"{rec['fps']:.3f} fps" if rec.get("fps") else "- fps"
    frames = rec["frames"]
    exact = "" if rec.get("frames_exact") else "~"
    rot = f", rotated {rec['rotation']}" if rec.get("rotation") else ""
    note = f"  ({rec['reason']})" if rec.get("reason") else ""
    access = rec.get("access")
    keys = f", {rec['keyframes']} keyframe(s)" if rec.get("keyframes") else ""
    how = {"seek": keys,
           "seek-checked": f"{keys}, counted in decode order ({rec.get('access_note')})",
           "sequential": f", decoded from the start on every read ({rec.get('access_note')})"
           }.get(access, "")
    return (f"{rec['path']}: {exact}{frames} frames, {fps}, {rec['width']}x{rec['height']}, "
            f"{rec.get('codec') or '?'}/{rec.get('pix_fmt') or '?'}{rot}{how}{note}")


def run(args: argparse.Namespace) -> int:
    from omnisource.data.decode import probe_many, write_probe_cache

    files = _expand(list(args.files), args.recursive)
    records = probe_many(files, decode=args.decode, workers=args.workers, backend=args.backend,
                         index_store=args.index_store)
    for rec in records:
        print(json.dumps(rec, sort_keys=True) if args.json else _line(rec))
    bad = sum(not r["readable"] for r in records)
    if args.out:
        n = write_probe_cache(args.out, records)
        print(f"wrote {args.out} ({n} records)", file=sys.stderr)
    if args.index_store:
        from omnisource.data.decode.index_store import get_store

        store = get_store(args.index_store)
        print(f"index store {store.path}: {len(store)} video(s)", file=sys.stderr)
    print(f"{len(records)} file(s), {len(records) - bad} readable, {bad} unreadable",
          file=sys.stderr)
    return 1 if (args.strict and bad) else 0
