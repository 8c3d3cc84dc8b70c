"""Re-encode videos at a smaller size (mmaction2's ``resize_videos.py``: short side 256 or 320
for the zoo's ``short-side`` rows), H.264 at the source frame rate, audio dropped.

    omnisource resize-videos data/kinetics400/videos_train --out data/kinetics400/videos_train_256 --short-side 256

Keeps the input's relative paths (``.mp4`` extension) under ``--out``; each video is written
atomically; parallel, resumable after kill -9, a progress bar and a failure summary; for a list
input also ``<list>_resized.txt`` naming the new files. Exit status as ``extract-frames``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from omnisource.commands.video_jobs import add_common, inputs, run_resumable, summarise

HELP = "re-encode videos at a short side of 256 / 320 (or a fixed size), resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--crf", type=int, default=20, help="H.264 quality (lower: better, bigger; default 20)")


def run(args: argparse.Namespace) -> int:
    from omnisource.data.annotations import Sample, write_annotations
    from omnisource.data.video_convert import resize_video
    from omnisource.errors import InputError

    if not args.short_side and not args.size:
        raise InputError("resize-videos needs --short-side N or --size W H")
    rows, digest = inputs(args)
    digest += f"|{args.crf}"
    jobs = [(rel, (str(abs_), str(args.out / Path(rel).with_suffix(".mp4")), args.short_side,
                   tuple(args.size) if args.size else None, args.crf)) for rel, abs_, _ in rows]
    results = run_resumable(args, "resize-videos", jobs, resize_video, digest, clean=("failures.txt", "summary.json"))
    if args.src.is_file():
        ok = [Sample(path=Path(rel).with_suffix(".mp4").as_posix(), label=lab, kind="video")
              for rel, _, lab in rows if results[rel]["status"] == "ok"]
        write_annotations(args.out / f"{args.src.stem}_resized.txt", ok, format="video")
    return summarise(args, "resize-videos", rows, results)
