"""Turn crawled web files into a validated manifest (paper section 3.3).

Input (exactly one):
  --folders ROOT      ROOT/<class name or query>/<files...>
  --list FILE         rows 'path<TAB>query' (paths relative to --root, default: FILE's folder)
  --urls FILE         rows 'url<TAB>query', downloaded into OUT/files first (concurrent,
                      retried, size-capped, content-sniffed, resumable)

Queries map to classes via --queries (the TSV of `omnisource queries`) or the label map.
Every file is decoded (images fully, videos: probe + first frame); corrupt, too small,
unmapped files and exact duplicates (sha1) are dropped with a reason. Writes
OUT/manifest.jsonl, OUT/duplicates.jsonl and OUT/meta.json (counts per class, source and
drop reason). Resumable (re-run after a kill continues) and sharded under torchrun.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

HELP = "validate crawled files (folders, file list or URL list) into a manifest"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folders", type=Path, metavar="ROOT", help="crawl folder laid out ROOT/<query>/<files>")
    src.add_argument("--list", dest="list_file", type=Path, metavar="FILE", help="'path<TAB>query' rows")
    src.add_argument("--urls", type=Path, metavar="FILE", help="'url<TAB>query' rows to download")
    p.add_argument("--label-map", type=Path, required=True, help="class names, one per line")
    p.add_argument("--queries", type=Path, default=None, help="queries TSV from `omnisource queries`")
    p.add_argument("--root", type=Path, default=None, help="data root for --list paths")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--source", default="web", help="source name written into every record (e.g. web_img)")
    p.add_argument("--kinds", default="image,video", help="accepted kinds, comma-separated (default image,video)")
    p.add_argument("--min-size", type=int, default=32, help="minimum short side in pixels (default 32)")
    p.add_argument("--min-frames", type=int, default=1, help="minimum frames of a video (default 1)")
    p.add_argument("--full-decode", action="store_true",
                   help="decode every frame of videos (finds mid-stream damage; slower)")
    p.add_argument("--workers", type=int, default=4, help="decode / download threads (default 4)")
    p.add_argument("--chunk-size", type=int, default=64, help="rows per checkpoint (default 64)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    p.add_argument("--force", action="store_true", help="redo a finished run")
    p.add_argument("--progress", action="store_true", default=None, help="force progress bars on")
    d = p.add_argument_group("download (--urls)")
    d.add_argument("--timeout", type=float, default=20.0, help="connect/read timeout, s (default 20)")
    d.add_argument("--max-time", type=float, default=600.0, help="whole-transfer limit, s (default 600)")
    d.add_argument("--retries", type=int, default=3, help="retries of transient errors (default 3)")
    d.add_argument("--backoff", type=float, default=0.5, help="first backoff delay, s, doubled per retry")
    d.add_argument("--max-mb", type=float, default=200.0, help="size cap per file in MiB (default 200)")
    d.add_argument("--retry-failed", action="store_true", help="retry URLs that failed permanently before")


def run(args: argparse.Namespace) -> int:
    from omnisource.errors import InputError
    from omnisource.web.ingest import ValidateConfig, ingest

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or any(k not in ("image", "video") for k in kinds):
        raise InputError(f"--kinds must list image and/or video, got {args.kinds!r}")
    cfg = ValidateConfig(min_size=args.min_size, min_frames=args.min_frames, kinds=kinds, source=args.source,
                         full_decode=args.full_decode)
    download = dict(timeout=args.timeout, max_time=args.max_time, retries=args.retries, backoff=args.backoff,
                    max_bytes=int(args.max_mb * 1024 * 1024), kinds=kinds, retry_failed=args.retry_failed)
    res = ingest(args.out, label_map=args.label_map, folders=args.folders, list_file=args.list_file, urls=args.urls,
                 root=args.root, queries=args.queries, cfg=cfg, workers=args.workers, chunk_size=args.chunk_size,
                 strict=args.strict, progress=args.progress, force=args.force, download=download)
    c = res.meta["counts"]
    what = "already done" if res.skipped else "done"
    print(f"ingest {what}: {c['in']['total']} candidates -> {c['out']['total']} kept, "
          f"{c['dropped']['total']} dropped {json.dumps(c['dropped']['by_reason'])}", file=sys.stderr)
    if "download" in res.meta:
        dc = res.meta["download"]
        print(f"  downloads: {dc['out']['total']} of {dc['in']['total']} ok, failures "
              f"{json.dumps(dc['dropped']['by_reason'])}", file=sys.stderr)
    print(f"  manifest: {res.manifest}  (paths relative to {res.data_root})", file=sys.stderr)
    return 0
