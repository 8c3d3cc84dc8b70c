"""Dataset utilities.

  omnisource data check LIST --root DIR [--backend pyav] [--format F] [--workers N] [--quick]
                         [--preset NAME] [--label-map FILE] [--strict] [--out report.json]
  omnisource data index-store SQLITE [--prune] [--no-vacuum]

``check`` reads every sample of an annotation list as training would (the frames the sampler
asks for: first/middle/last frame by default, or a preset's test sampler with ``--preset``),
then decodes every frame of every video (in parallel over --workers, with a progress bar), and
prints a summary: readable / unreadable counts, counts per reason and per class, and each
unreadable file with its list line and reason -- a video with damaged packets is ``damaged``
(with the count), a still image listed as a video is named as such. ``--quick`` skips the
every-frame pass. Videos whose container over-declares its frame count are reported
separately: training handles them by re-sampling.

``index-store`` describes a demux-index store (``omnisource.data.decode.index_store``): entries,
size on disk, and stale entries -- files deleted or changed since they were indexed, which no
read will use again; ``--prune`` deletes those (and compacts the file unless ``--no-vacuum``).

Exit status of ``check``: 0 when the check ran (even with unreadable samples, which training skips);
1 with ``--strict`` when any sample is unreadable; 2 for a bad list or arguments.
"""
from __future__ import annotations

import argparse
import os
import sqlite3

HELP = "check annotation lists (decode every sample, report unreadable ones); inspect / prune an index store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("check", help="decode every sample of a list and report unreadable ones",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("list", metavar="LIST", help="annotation file (mmaction2 list, untrimmed json, JSONL manifest)")
    p.add_argument("--root", required=True, help="data root the list's paths are relative to")
    p.add_argument("--backend", default="pyav", choices=["pyav", "decord"], help="video decoder (default pyav)")
    p.add_argument("--format", default=None,
                   choices=["video", "rawframes", "image", "untrimmed", "untrimmed_json", "manifest"],
                   help="list format (default: recognised from content)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="parallel worker processes (0 = in this process; default min(4, CPUs))")
    p.add_argument("--preset", default=None, help="decode what this preset's sampler asks for (e.g. tsn_1x1x3_test)")
    p.add_argument("--label-map", default=None, help="label map file: labels are validated, classes named")
    p.add_argument("--num-classes", type=int, default=None, help="validate labels against this many classes")
    p.add_argument("--with-offset", default=None, action=argparse.BooleanOptionalAction,
                   help="rawframe rows carry an offset column (default: guessed)")
    p.add_argument("--filename-tmpl", default="img_{:05}.jpg", help="rawframe file name template")
    p.add_argument("--start-index", type=int, default=1, help="first rawframe number")
    p.add_argument("--clipname-tmpl", default="part_{}.mp4", help="clip names of untrimmed video folders")
    p.add_argument("--quick", action="store_true",
                   help="decode only the first / middle / last frame (or --preset's) of each video, not every frame")
    p.add_argument("--limit", type=int, default=None, help="check only the first N samples")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any sample is unreadable")
    p.add_argument("--out", default=None, help="write the full report as JSON (atomically)")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="draw the samples per class (listed and readable) into this PNG")
    p.add_argument("--index-store", default=None, metavar="SQLITE",
                   help="keep every video's demux index in this file as it is read; give the same "
                        "file to training (data option index_store, or OMNISOURCE_INDEX_STORE)")
    p.add_argument("--progress", default=None, action=argparse.BooleanOptionalAction,
                   help="progress bar (default: when stderr is a terminal, or OMNISOURCE_PROGRESS=1)")
    q = sub.add_parser("index-store", help="describe a demux-index store; --prune deletes stale entries",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("store", metavar="SQLITE", help="the store file (as given to --index-store / data.index_store)")
    q.add_argument("--prune", action="store_true",
                   help="delete the entries of files that are gone or changed since they were indexed")
    q.add_argument("--no-vacuum", dest="vacuum", action="store_false",
                   help="with --prune: leave the freed pages in the file (no compaction)")
    q.add_argument("--progress", default=None, action=argparse.BooleanOptionalAction,
                   help="progress bar over the entries (default: when stderr is a terminal)")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        return _check(args)
    if args.data_command == "index-store":
        return _index_store(args)
    raise SystemExit(2)  # pragma: no cover - argparse enforces the choice


def _check(args: argparse.Namespace) -> int:
    from omnisource.data.check import check_annotations, format_summary
    from omnisource.errors import InputError
    from omnisource.utils.io import atomic_write_json

    if args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    report = check_annotations(args.list, args.root, backend=args.backend, format=args.format, workers=args.workers,
                               preset=args.preset, label_map=args.label_map, num_classes=args.num_classes,
                               with_offset=args.with_offset, filename_tmpl=args.filename_tmpl,
                               start_index=args.start_index, clipname_tmpl=args.clipname_tmpl, limit=args.limit,
                               progress=args.progress, index_store=args.index_store, quick=args.quick)
    print(format_summary(report), flush=True)
    if args.out:
        atomic_write_json(args.out, report)
        print(f"report written to {args.out}")
    if args.plot:
        from omnisource.data.check import class_counts_png
        from omnisource.utils.io import atomic_write_bytes

        atomic_write_bytes(args.plot, class_counts_png(report))
        print(f"class distribution drawn in {args.plot}")
    return 1 if args.strict and report["failed"] else 0


def _index_store(args: argparse.Namespace) -> int:
    from omnisource.data.decode.index_store import IndexStore
    from omnisource.errors import InputError
    from omnisource.utils.progress import progress_enabled

    path = os.path.abspath(os.path.expanduser(args.store))
    if not os.path.isfile(path):  # inspecting must not create an empty store
        raise InputError(f"{args.store}: no such index store")
    store = IndexStore(path)
    try:
        try:
            stale = store.stale_paths(progress=progress_enabled(args.progress))
        except (OSError, sqlite3.Error) as err:
            raise InputError(f"{args.store}: not a readable index store ({err})") from None
        mb = store.disk_bytes() / 2**20
        print(f"index store {path}: {len(store)} video(s), {mb:.1f} MiB on disk")
        missing = sorted(p for p, why in stale.items() if why == "missing")
        changed = sorted(p for p, why in stale.items() if why == "changed")
        print(f"stale: {len(stale)} (missing {len(missing)}, changed since indexed {len(changed)})")
        for why, paths in (("missing", missing), ("changed", changed)):
            for p in paths[:10]:
                print(f"  {why}: {p}")
            if len(paths) > 10:
                print(f"  ... and {len(paths) - 10} more {why}")
        if stale and not args.prune:
            print("run with --prune to delete them")
        if args.prune and stale:
            gone = store.prune(sorted(stale), vacuum=args.vacuum)
            print(f"pruned {gone} entries: {len(store)} left, {store.disk_bytes() / 2**20:.1f} MiB on disk")
    finally:
        store.close()
    return 0
