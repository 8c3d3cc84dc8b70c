"""Turn untrimmed web videos into training samples with a teacher (paper section 3.5).

--mode 2d (for 2D students): frames at --fps (1) are scored by a 2D teacher; each sample is a
snippet of --num-pos positive + --num-neg negative frames (1 + 2) labelled with the positive's
class, written as a manifest record with frame_inds.
--mode 3d (for 3D students): --window second windows (10 s) scored by a 3D teacher; positive
windows are kept with pseudo-labels, written as records with segment [start, end].

No video is cut, re-encoded or deleted: the datasets sample inside frame_inds / segment.
Writes OUT/manifest.jsonl, dropped.jsonl, side.jsonl (per-video frame / window scores) and
meta.json. Resumable, and sharded under torchrun.

Example:
  omnisource untrimmed web_videos.jsonl --mode 2d --teacher configs/tsn_r50.yaml tsn.pth \\
      --pos-threshold 0.6 --out work/untrimmed_2d
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "untrimmed web videos -> snippets (2D) or positive 10 s windows (3D) via a teacher"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from omnisource.web.runopts import add_run_arguments, add_teacher_arguments

    p.add_argument("manifest", type=Path, help="manifest of untrimmed videos (JSONL)")
    p.add_argument("--mode", choices=("2d", "3d"), required=True, help="2d: snippets; 3d: windows")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--data-root", type=Path, default=None,
                   help="root of the manifest's paths (default: from its meta.json, else its folder)")
    p.add_argument("--label-map", type=Path, default=None, help="class names (to map string query labels)")
    add_teacher_arguments(p)
    u = p.add_argument_group("samples")
    u.add_argument("--fps", type=float, default=1.0, help="2d: frames scored per second (default 1)")
    u.add_argument("--pos-threshold", type=float, default=0.5, help="confidence of a positive (default 0.5)")
    u.add_argument("--neg-threshold", type=float, default=None,
                   help="2d: negatives score below this (default: every non-positive frame)")
    u.add_argument("--num-pos", type=int, default=1, help="2d: positive frames per snippet (default 1)")
    u.add_argument("--num-neg", type=int, default=2, help="2d: negative frames per snippet (default 2)")
    u.add_argument("--max-samples", type=int, default=None, help="samples per video (most confident first)")
    u.add_argument("--agree", action="store_true", help="positives must match the query class")
    u.add_argument("--window", type=float, default=10.0, help="3d: window length in seconds (default 10)")
    u.add_argument("--stride", type=float, default=None, help="3d: window spacing (default: --window)")
    u.add_argument("--min-window", type=float, default=None, help="3d: shortest tail window (default window/2)")
    u.add_argument("--seed", type=int, default=0)
    add_run_arguments(p, chunk=4, batch=32)


def run(args: argparse.Namespace) -> int:
    from omnisource.data.annotations import read_label_map
    from omnisource.errors import InputError
    from omnisource.web.runopts import annotate_meta, resolve_device, resolve_data_root, setup_logging
    from omnisource.web.teacher import build_ensemble, parse_teacher_args
    from omnisource.web.untrimmed import UntrimmedSettings, untrimmed_stage

    setup_logging(args.verbose)
    args.device = resolve_device(args.device)
    if not args.manifest.is_file():
        raise InputError("manifest not found", args.manifest)
    settings = UntrimmedSettings(mode=args.mode, fps=args.fps, pos_threshold=args.pos_threshold,
                                 neg_threshold=args.neg_threshold, num_pos=args.num_pos, num_neg=args.num_neg,
                                 max_samples=args.max_samples, agree=args.agree, window=args.window,
                                 stride=args.stride, min_window=args.min_window, seed=args.seed).validate()
    names = read_label_map(args.label_map) if args.label_map else None
    root = resolve_data_root(args.manifest, args.data_root)
    ens = build_ensemble(parse_teacher_args(args.teacher, args.teacher_set), device=args.device,
                         data_root=str(root), segments=args.segments, clips=args.clips,
                         batch_size=args.batch_size, num_workers=args.workers, backend=args.decode_backend)
    try:
        res = untrimmed_stage(args.manifest, args.out, ens, settings, data_root=str(root),
                              batch_size=args.batch_size, label_map=names, chunk_size=args.chunk_size,
                              strict=args.strict, progress=args.progress, force=args.force,
                              backend=args.decode_backend)
    finally:
        ens.close()
    annotate_meta(args.out, data_root=root)
    c = res.meta["counts"]
    what = "snippets" if args.mode == "2d" else "windows"
    print(f"untrimmed ({args.mode}): {c['in']['total']} videos -> {c['out']['total']} {what}; "
          f"videos dropped {json.dumps(c['dropped']['by_reason'])}\n  manifest: {res.manifest}", file=sys.stderr)
    return 0
