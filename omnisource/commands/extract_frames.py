"""JPEG rawframes (and optical flow) of every video of a list or a folder, as mmaction2's
``build_rawframes.py`` lays them out.

    omnisource extract-frames data/ucf101/videos --out data/ucf101/rawframes --short-side 256 --flow tvl1

Writes ``<out>/<video path without extension>/img_00001.jpg ...`` (with ``--flow``: also
``x_00001.jpg`` / ``y_00001.jpg`` per consecutive frame pair, clipped to ``--bound`` pixels),
each video's folder atomically, and, for a list input, ``<list>_rawframes.txt`` (``folder
frames labels``: a RawframeDataset list) and ``<list>_flow.txt`` (flow frame counts). Parallel
over processes, a progress bar, resumable after kill -9 (finished videos are skipped), a summary
of failures (``failures.txt``); exit status 0 when videos were done (unreadable ones reported),
1 when none could be read, 2 for bad input or, with ``--strict``, the first unreadable video.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from omnisource.commands.video_jobs import add_common, inputs, run_resumable, summarise

HELP = "JPEG rawframes (+ TV-L1 / Farneback optical flow) of videos, mmaction2's naming, resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--flow", choices=["farneback", "tvl1"], default=None,
                   help="also write optical flow x / y JPEGs (tvl1 needs opencv-contrib)")
    p.add_argument("--bound", type=float, default=20.0, help="flow clip bound in pixels (default 20)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")


def run(args: argparse.Namespace) -> int:
    from omnisource.data.annotations import Sample, write_annotations
    from omnisource.data.video_convert import extract_frames

    rows, digest = inputs(args)
    digest += f"|{args.flow}|{args.bound}|{args.quality}"
    jobs = [(rel, (str(abs_), str(args.out / Path(rel).with_suffix("")), args.short_side,
                   tuple(args.size) if args.size else None, args.flow, args.bound, args.quality))
            for rel, abs_, _ in rows]
    results = run_resumable(args, "extract-frames", jobs, extract_frames, digest,
                            clean=("failures.txt", "summary.json"))
    if args.src.is_file():
        ok = [r for r in rows if results[r[0]]["status"] == "ok"]
        frames = [Sample(path=Path(rel).with_suffix("").as_posix(), label=lab, kind="rawframes",
                         total_frames=int(results[rel]["frames"])) for rel, _, lab in ok]
        write_annotations(args.out / f"{args.src.stem}_rawframes.txt", frames, format="rawframes")
        if args.flow:
            flows = [Sample(path=s.path, label=s.label, kind="rawframes",
                            total_frames=int(results[rel]["flow_frames"])) for s, (rel, _, _) in zip(frames, ok)]
            write_annotations(args.out / f"{args.src.stem}_flow.txt", flows, format="rawframes")
    return summarise(args, "extract-frames", rows, results)
